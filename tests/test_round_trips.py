"""Exact database round trips per request, counted with pymongo command monitoring."""
import bson
import pytest


@pytest.fixture
def warm_app(app, round_trips):
    """The app after its one-time index creation, with the command log reset."""
    app.get('/session?set=warm:1')
    app.reset()
    assert 'createIndexes' in round_trips()
    return app


def test_untouched_request_costs_nothing(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    response = warm_app.get('/untouched')
    assert round_trips() == []
    assert 'Set-Cookie' not in response.headers


def test_new_visitor_with_empty_session_costs_nothing(warm_app, round_trips):
    response = warm_app.get('/session?read=anything')
    assert round_trips() == []
    assert 'Set-Cookie' not in response.headers


def test_new_visitor_who_stores_data_costs_one_write(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    assert round_trips() == ['insert']


def test_returning_reader_costs_one_find(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    response = warm_app.get('/session?read=a')
    assert round_trips() == ['find']
    assert 'Set-Cookie' not in response.headers


def test_returning_writer_costs_find_and_update(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?set=a:2')
    assert round_trips() == ['find', 'update']


def test_nested_change_is_written_without_changed(warm_app, round_trips):
    warm_app.get('/session?set=cart:[]')
    round_trips()
    warm_app.get('/session?append=cart:"apple"')
    assert round_trips() == ['find', 'update']
    assert warm_app.get('/session').json['data'] == {'cart': ['apple']}


def test_reading_a_nested_value_writes_nothing(warm_app, round_trips):
    warm_app.get('/session?set=cart:["apple"]')
    round_trips()
    warm_app.get('/session?read=cart')
    assert round_trips() == ['find']


def test_change_id_costs_three(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?opt=change_id')
    assert round_trips() == ['find', 'insert', 'findAndModify']


def test_expire_costs_two(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?opt=expire')
    assert round_trips() == ['find', 'delete']


def test_stale_cookie_costs_one_find_then_is_cleared(warm_app, round_trips, collection):
    warm_app.get('/session?set=a:1')
    collection.delete_many({})
    round_trips()
    response = warm_app.get('/session?read=a')
    assert round_trips() == ['find']
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    warm_app.get('/session?read=a')
    assert round_trips() == []


def test_bad_signature_costs_no_query(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    cookie = warm_app.cookies['session']
    warm_app.set_cookie('session', cookie[:-2] + ('A' if cookie[-2] != 'A' else 'B') + cookie[-1])
    assert warm_app.get('/session').json['new'] is True
    assert round_trips() == []


def test_index_is_created_once_per_process(warm_app, round_trips):
    for _ in range(3):
        warm_app.get('/session?set=a:1')
    assert 'createIndexes' not in round_trips()


def test_write_carries_only_the_changed_key(app, command_log, database, collection):
    big = 'x' * 100_000
    app.get('/session?set=big:"%s"' % big)
    command_log.clear()
    app.get('/session?set=small:1')
    updates = [e.command for e in command_log.events
               if e.database_name == database.name and e.command_name == 'update']
    assert len(updates) == 1
    assert len(bson.encode(updates[0])) < 2048
    assert collection.find_one()['data'] == {'big': big, 'small': 1}


def test_every_session_command_targets_one_id(app, command_log, database):
    """Each query names its document by _id: single-shard on a cluster sharded on _id."""
    app.get('/session?set=a:1')
    app.get('/session?read=a')
    app.get('/session?set=b:2')
    app.get('/session?opt=change_id')
    app.get('/session?opt=expire')
    filters = []
    for event in command_log.events:
        if event.database_name != database.name:
            continue
        command = event.command
        name = event.command_name
        if name == 'find':
            filters.append(command['filter'])
        elif name == 'update':
            filters.extend(update['q'] for update in command['updates'])
        elif name == 'delete':
            filters.extend(delete['q'] for delete in command['deletes'])
        elif name == 'findAndModify':
            filters.append(command['query'])
        elif name == 'insert':
            filters.extend({'_id': doc['_id']} for doc in command['documents'])
    assert len(filters) >= 8
    assert all(isinstance(f.get('_id'), str) and len(f['_id']) == 64 for f in filters), filters
