"""``pmongosession sessions``, ``revoke --user`` and ``export``, against the real server."""
import json
import uuid

import pymongo
import pytest
from bson.json_util import loads as json_loads

from pyramid_mongosession.crypto import new_key

from .test_accounts import account_app, browser, handle_of, log_in
from .test_cli import one_error_line, write_ini

AGENTS = ('Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
          'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148',
          'curl/8.8.0')
ADDRESSES = ('203.0.113.77', '2001:db8:abcd:12::7', '198.51.100.20')


def three_sessions(collection, user='alice', **options):
    """Three logged-in browsers of ``user`` (and a session of bob's, and an anonymous one)."""
    wsgi = account_app(collection, **options)
    clients = [log_in(wsgi, user, agent=agent, address=address)
               for agent, address in zip(AGENTS, ADDRESSES)]
    clients[0].get('/do?set=cart:apple')
    log_in(wsgi, 'bob')
    browser(wsgi).get('/do?set=anonymous:1')
    return wsgi, clients


@pytest.fixture
def ini(tmp_path, mongodb_url, database):
    return write_ini(tmp_path / 'app.ini', mongodb_url, database.name)


def test_sessions_lists_a_users_sessions_as_a_table(run, ini, collection):
    wsgi, clients = three_sessions(collection)
    status, out, err = run('sessions', ini, 'alice')
    assert (status, err) == (0, '')
    lines = out.splitlines()
    assert lines[0].split() == ['HANDLE', 'CREATED', '(UTC)', 'LAST', 'SEEN', 'EXPIRES',
                                'NETWORK', 'USER', 'AGENT']
    rows = lines[1:-1]
    assert [row.split()[0] for row in rows] == [handle_of(c) for c in reversed(clients)]
    assert rows[0].endswith('198.51.100.0/24     curl/8.8.0')
    assert rows[1].endswith('2001:db8:abcd::/48  ' + AGENTS[1])
    assert lines[-1] == '3 live sessions of user "alice" in %s' % collection.full_name
    assert 'apple' not in out            # the data is export's business


def test_sessions_json(run, ini, collection):
    wsgi, clients = three_sessions(collection)
    status, out, err = run('sessions', ini, 'alice', '--json')
    assert (status, err) == (0, '')
    listed = json.loads(out)
    assert [s['handle'] for s in listed] == [handle_of(c) for c in reversed(clients)]
    assert set(listed[0]) == {'handle', 'created', 'last_seen', 'expires', 'user_agent',
                              'client_address'}
    assert listed[2]['user_agent'] == AGENTS[0]
    status, out, err = run('sessions', ini, 'nobody', '--json')
    assert (status, out) == (0, '[]\n')


def test_userid_is_read_as_json_when_it_parses(run, ini, collection):
    client = browser(account_app(collection))
    client.get('/do?set=visit:1')
    client.get('/do?login_number=42&rotate=1')
    assert run('sessions', ini, '42')[1].splitlines()[-1].startswith(
        '1 live session of user 42 ')
    assert run('sessions', ini, '"42"')[1].splitlines()[-1].startswith(
        '0 live sessions of user "42" ')


def test_revoke_user_keeps_one_and_says_how_many(run, ini, collection):
    wsgi, clients = three_sessions(collection)
    keep = handle_of(clients[1])
    status, out, err = run('revoke', ini, '--user', 'alice', '--keep', keep, '--dry-run')
    assert (status, err) == (0, '')
    assert out == '2 live sessions of user "alice" but %s; nothing deleted (--dry-run)\n' % keep
    status, out, err = run('revoke', ini, '--user', 'alice', '--keep', keep)
    assert (status, err) == (0, '')
    assert out == 'revoked 2 sessions of user "alice" but %s\n' % keep
    assert [c.get('/do?read=1').json['user'] for c in clients] == [None, 'alice', None]
    assert collection.count_documents({'user': 'bob'}) == 1
    status, out, err = run('revoke', ini, '--user', 'alice')
    assert out == 'revoked 1 session of user "alice"\n'
    assert collection.count_documents({'user': 'alice'}) == 0


@pytest.mark.parametrize('dry_run', [(), ('--dry-run',)])
def test_revoke_user_with_a_keep_that_is_not_a_live_session_revokes_nothing(
        run, ini, collection, dry_run):
    wsgi, clients = three_sessions(collection)
    bob = log_in(wsgi, 'bob')
    for keep in ('nosuchhandle', '-nosuchhandle', handle_of(bob)):
        status, out, err = run('revoke', ini, '--user', 'alice', '--keep', keep, *dry_run)
        assert (status, out) == (2, '')
        assert err == ('pmongosession: error: --keep %s is not the handle of a live session '
                       'of user "alice": nothing was revoked (see "pmongosession sessions '
                       '%s "alice"")\n' % (keep, ini))
    assert collection.count_documents({'user': 'alice'}) == 3
    assert [c.get('/do?read=1').json['user'] for c in clients] == ['alice'] * 3


def test_revoke_user_keeps_a_handle_that_begins_with_a_dash(run, ini, collection):
    # One handle in 64 begins with "-", which argparse alone takes for an option.
    wsgi, clients = three_sessions(collection)
    keep = '-' + handle_of(clients[1])[1:]
    collection.update_one({'handle': handle_of(clients[1])}, {'$set': {'handle': keep}})
    status, out, err = run('revoke', ini, '--user', 'alice', '--keep', keep)
    assert (status, err) == (0, '')
    assert out == 'revoked 2 sessions of user "alice" but %s\n' % keep
    assert [c.get('/do?read=1').json['user'] for c in clients] == [None, 'alice', None]


def test_a_user_id_that_begins_with_a_dash(run, ini, collection):
    three_sessions(collection, user='-alice')
    status, out, err = run('sessions', ini, '--', '-alice')
    assert out.splitlines()[-1].startswith('3 live sessions of user "-alice" ')
    status, out, err = run('revoke', ini, '--user', '-alice', '--dry-run')
    assert (status, err) == (0, '')
    assert out == '3 live sessions of user "-alice"; nothing deleted (--dry-run)\n'


@pytest.mark.parametrize('argv, message', [
    (('--keep', 'abc'), '--keep needs --user'),
    (('--user', 'alice', '--keep', '--dry-run'), 'argument --keep: expected one argument'),
    (('--user', 'alice', 'role=admin'), 'cannot be combined'),
    (('--user', 'alice', '--json', '{"a": 1}'), 'cannot be combined'),
])
def test_revoke_user_usage_errors(run, ini, collection, argv, message):
    three_sessions(collection)
    status, out, err = run('revoke', ini, *argv)
    assert status == 2
    assert message in one_error_line(err)
    assert collection.count_documents({'user': 'alice'}) == 3


def test_export_prints_everything_stored_about_a_users_sessions(run, ini, collection):
    wsgi, clients = three_sessions(collection)
    status, out, err = run('export', ini, 'alice')
    assert (status, err) == (0, '')
    exported = json_loads(out)
    assert exported['user'] == 'alice' and exported['collection'] == collection.full_name
    sessions = exported['sessions']
    assert [s['handle'] for s in sessions] == [handle_of(c) for c in reversed(clients)]
    oldest = sessions[-1]
    assert oldest['data'] == {'visit': '1', 'auth.userid': 'alice', 'cart': 'apple'}
    assert oldest['client'] == {'agent': AGENTS[0], 'address': '203.0.113.0/24'}
    assert {'created', 'expires', 'last_seen', 'v', 'user'} <= set(oldest)
    assert '_id' not in oldest
    assert '"$date"' in out


def test_export_and_sessions_with_encryption_need_the_keys(run, tmp_path, mongodb_url,
                                                          database, collection):
    key = new_key()
    wsgi, clients = three_sessions(collection, encryption_keys=[key])
    assert 'alice' not in str(list(collection.find()))
    path = write_ini(tmp_path / 'enc.ini', mongodb_url, database.name,
                     extra='mongodb_session.encryption_keys = %(SESSION_KEY)s')
    for argv in (('sessions', path, 'alice'), ('export', path, 'alice'),
                 ('revoke', path, '--user', 'alice')):
        status, out, err = run(*argv)
        assert status == 2
        assert '--var SESSION_KEY=VALUE' in one_error_line(err)
    status, out, err = run('sessions', path, 'alice', '--var', 'SESSION_KEY=' + key)
    assert (status, err) == (0, '')
    assert out.splitlines()[-1].startswith('3 live sessions')
    assert 'curl/8.8.0' in out
    status, out, err = run('export', path, 'alice', '--var', 'SESSION_KEY=' + key)
    assert (status, err) == (0, '')
    sessions = json_loads(out)['sessions']
    assert sessions[-1]['data'] == {'visit': '1', 'auth.userid': 'alice', 'cart': 'apple'}
    assert sessions[-1]['client']['agent'] == AGENTS[0]
    assert sessions[-1]['user'] == 'alice'
    status, out, err = run('revoke', path, '--user', 'alice', '--var', 'SESSION_KEY=' + key)
    assert out == 'revoked 3 sessions of user "alice"\n'
    # The other commands still do without the keys.
    assert run('stats', path)[0] == 0


def test_commands_about_users_need_a_user_key(run, tmp_path, mongodb_url, database):
    path = write_ini(tmp_path / 'nouser.ini', mongodb_url, database.name,
                     extra='mongodb_session.user_key = none')
    for argv in (('sessions', path, 'alice'), ('export', path, 'alice'),
                 ('revoke', path, '--user', 'alice')):
        status, out, err = run(*argv)
        assert status == 2
        assert 'user_key is none' in one_error_line(err)


def test_ensure_indexes_reports_the_user_indexes(run, ini, tmp_path, atomic_server_url):
    status, out, err = run('ensure-indexes', ini)
    assert (status, err) == (0, '')
    assert 'refused partial indexes' in out or 'user indexes on' in out
    # On a server with partial indexes (mongo-java-server, MongoDB):
    client = pymongo.MongoClient(atomic_server_url, serverSelectionTimeoutMS=5000)
    name = 'test_%s' % uuid.uuid4().hex[:16]
    try:
        other = write_ini(tmp_path / 'partial.ini', atomic_server_url, name)
        status, out, err = run('ensure-indexes', other)
        assert (status, err) == (0, '')
        assert ('user indexes on %s.sessions: user_session_handles, user_sessions' % name) in out
        assert run('ensure-indexes', other)[:2] == (status, out)
    finally:
        client.drop_database(name)
        client.close()
