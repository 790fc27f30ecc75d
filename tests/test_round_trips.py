"""Exact database round trips per request, counted with pymongo command monitoring."""
import datetime
import threading

import bson
import pytest
import webtest
from pyramid.interfaces import ISessionFactory
from pyramid.response import Response

from .conftest import make_config


@pytest.fixture
def warm_app(app, round_trips):
    """The app after its one-time index creation, with the command log reset."""
    app.warmed()
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


def test_returning_writer_that_reads_costs_find_and_update(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?read=a&set=a:2')
    assert round_trips() == ['find', 'update']


@pytest.mark.parametrize('query', ['set=a:2', 'del=a', 'flash=hello', 'set=a:2&del=b&flash=hi'])
def test_write_only_request_costs_one_update(warm_app, round_trips, query):
    warm_app.get('/session?set=a:1&set=b:1')
    round_trips()
    warm_app.get('/session?blind=1&' + query)
    assert round_trips() == ['update']


def test_write_only_request_lands_as_if_it_had_read(warm_app):
    warm_app.get('/session?set=a:1&set=b:1&flash=first')
    warm_app.get('/session?blind=1&set=a:2&del=b&del=missing&flash=second')
    assert warm_app.get('/session').json['data'] == {'a': 2, '_f_': ['first', 'second']}


def test_write_only_request_to_a_gone_session_starts_a_new_one(warm_app, round_trips,
                                                               collection):
    warm_app.get('/session?set=a:1')
    old_cookie = warm_app.cookies['session']
    collection.delete_many({})
    round_trips()
    response = warm_app.get('/session?blind=1&set=b:2')
    # The find tells a gone id from one that change_id retired moments ago.
    assert round_trips() == ['update', 'find', 'insert']
    assert warm_app.cookies['session'] != old_cookie
    assert 'Max-Age=0' not in response.headers['Set-Cookie']
    assert warm_app.get('/session').json['data'] == {'b': 2}


def test_write_only_request_to_an_expired_session_does_not_revive_it(warm_app, collection):
    warm_app.get('/session?set=a:1')
    collection.update_many({}, {'$set': {'expires': datetime.datetime(2000, 1, 1)}})
    warm_app.get('/session?blind=1&set=b:2')
    assert warm_app.get('/session').json['data'] == {'b': 2}
    live = {'expires': {'$gt': datetime.datetime(2001, 1, 1)}}
    assert [doc['data'] for doc in collection.find(live)] == [{'b': 2}]


def test_write_only_login_costs_three(warm_app, round_trips, collection):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?blind=1&set=user:"alice"&opt=change_id')
    # As after a read: the load, the new document, then the old one retired. The
    # session is under one id or the other at every moment (revoke_user finds it).
    assert round_trips() == ['find', 'insert', 'findAndModify']
    assert warm_app.get('/session').json['data'] == {'a': 1, 'user': 'alice'}
    assert collection.count_documents({'data.a': 1}) == 1


def test_logout_costs_one(warm_app, round_trips, collection):
    warm_app.get('/session?set=a:1')
    round_trips()
    response = warm_app.get('/session?blind=1&opt=expire')
    assert round_trips() == ['delete']
    assert 'Max-Age=0' in response.headers['Set-Cookie']
    assert collection.count_documents({'data.a': 1}) == 0


def test_the_logout_of_a_retired_id_costs_one_more_and_leaves_the_cookie(
        warm_app, round_trips, collection):
    """The delete finds nothing (a tombstone is never deleted): one find tells a
    retired id, whose logout must not clear the cookie of the new login."""
    warm_app.get('/session?set=a:1')
    old_cookie = warm_app.cookies['session']
    warm_app.get('/session?blind=1&set=user:"alice"&opt=change_id')
    stale = warm_app.visitor(old_cookie)
    round_trips()
    response = stale.get('/session?blind=1&opt=expire')
    assert round_trips() == ['delete', 'find']
    assert 'Set-Cookie' not in response.headers
    assert warm_app.get('/session').json['data'] == {'a': 1, 'user': 'alice'}


def test_absolute_timeout_makes_a_write_read_first(make_app, round_trips):
    app = make_app(absolute_timeout=3600)
    app.get('/session?set=a:1')
    round_trips()
    app.get('/session?blind=1&set=a:2')
    assert [name for name in round_trips() if name != 'createIndexes'] == ['find', 'update']


def test_a_large_write_reads_first(warm_app, round_trips):
    warm_app.get('/session?set=a:1')
    round_trips()
    warm_app.get('/session?blind=1&set=big:"%s"' % ('x' * 20000))
    assert round_trips() == ['find', 'update']


def test_concurrent_flashes_both_survive(make_app, collection):
    """Two requests that flash without reading: $push keeps both messages."""
    app = make_app()
    app.get('/session?set=a:1')
    cookie = app.cookies['session']
    first_flashed, second_done = threading.Event(), threading.Event()

    def slow_flash(request):
        request.session.flash('first')
        first_flashed.set()
        assert second_done.wait(10)
        return Response('ok')
    factory = app.app.registry.queryUtility(ISessionFactory)
    config = make_config(factory)
    config.add_route('slow', '/slow')
    config.add_view(slow_flash, route_name='slow')
    wsgi = config.make_wsgi_app()
    slow = webtest.TestApp(wsgi)
    slow.set_cookie('session', cookie)
    thread = threading.Thread(target=slow.get, args=('/slow',))
    thread.start()
    assert first_flashed.wait(10)
    other = webtest.TestApp(wsgi)
    other.set_cookie('session', cookie)
    other.get('/session?blind=1&flash=second')
    second_done.set()
    thread.join(10)
    assert sorted(app.get('/session').json['data']['_f_']) == ['first', 'second']


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


def test_change_id_after_reading_costs_three(warm_app, round_trips):
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
