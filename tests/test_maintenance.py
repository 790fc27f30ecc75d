"""The operators' calls (what ``pmongosession`` runs): counts, sizes, indexes, purge,
against the real server of the suite."""
import datetime
import os

import bson
import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from pyramid_mongosession import SessionBackendError
from pyramid_mongosession.documents import document_id

from .conftest import add_sessions, factory_for


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def stored_sizes(collection):
    return sorted(len(bson.encode(doc)) for doc in collection.find())


class Failing:
    """A sessions collection whose ``aggregate`` raises ``error``; all else is real."""

    def __init__(self, collection, error):
        self._collection = collection
        self._error = error

    def with_options(self, **kwargs):
        return Failing(self._collection.with_options(**kwargs), self._error)

    def aggregate(self, *args, **kwargs):
        raise self._error

    def __getattr__(self, name):
        return getattr(self._collection, name)


def test_namespace(collection):
    assert factory_for(collection).connection.namespace() == collection.full_name


def test_session_counts(collection):
    factory = factory_for(collection)
    assert factory.maintenance.session_counts(utcnow()) == (0, 0)
    add_sessions(factory.store, 4)
    add_sessions(factory.store, 3, expired=True)
    assert factory.maintenance.session_counts(utcnow()) == (7, 3)
    # "expired" is relative to the time given
    assert factory.maintenance.session_counts(utcnow() - datetime.timedelta(hours=1)) == (7, 0)


def test_ttl_index_name(collection):
    factory = factory_for(collection)
    if factory.indexes.ensure():     # MongoDB, FerretDB 2.x
        assert factory.indexes.ttl_index_name() == 'expires_ttl'
    else:                          # FerretDB 1.x refuses TTL indexes
        assert factory.indexes.ttl_index_name() is None
    collection.drop_indexes()
    collection.create_index('expires', name='plain')   # not a TTL index
    assert factory.indexes.ttl_index_name() is None


@pytest.mark.parametrize('at_random', [False, True])
def test_document_sizes(collection, at_random):
    factory = factory_for(collection)
    add_sessions(factory.store, 10, payload='x' * 10)
    actual = stored_sizes(collection)
    sizes, refusal = factory.maintenance.document_sizes(4 if at_random else 10, at_random=at_random)
    # computed by the server (refusal None), or, where it cannot (FerretDB
    # 1.x), measured here from the first documents, with the server's reason
    assert refusal is None or (isinstance(refusal, str) and refusal)
    assert len(sizes) == (4 if at_random else 10)
    assert set(sizes) <= set(actual)
    if not at_random:
        assert sorted(sizes) == actual


def test_document_sizes_measured_here_when_the_server_cannot(collection):
    refusal = OperationFailure('no $bsonSize here', code=238,
                               details={'errmsg': 'no $bsonSize here', 'code': 238})
    factory = factory_for(lambda: Failing(collection, refusal))
    add_sessions(factory.store, 6, payload='y')
    sizes, reason = factory.maintenance.document_sizes(4, at_random=True)
    assert reason == 'no $bsonSize here'
    first = [len(bson.encode(doc)) for doc in collection.find().limit(4)]
    assert sizes == first


def test_document_sizes_does_not_hide_an_outage(collection):
    factory = factory_for(lambda: Failing(collection, AutoReconnect('connection reset')))
    add_sessions(factory.store, 2)
    with pytest.raises(SessionBackendError, match='connection reset') as info:
        factory.maintenance.document_sizes(10)
    assert isinstance(info.value.__cause__, AutoReconnect)


# -- purge at scale ------------------------------------------------------------------------

PURGE_POPULATION = int(os.environ.get('PURGE_POPULATION', '100000'))


def test_purge_removes_a_large_population_within_its_batch_budget(collection):
    """Every expired session goes, none of the live ones, with no delete over its budget.

    FerretDB 1.x scans the whole collection for each delete and cannot delete
    more than about 32 000 documents in one: the ranges must adapt to both.
    """
    past, future = datetime.datetime(2000, 1, 1), datetime.datetime(2100, 1, 1)
    for start in range(0, PURGE_POPULATION, 10000):
        collection.insert_many([
            {'_id': document_id('expired-%d' % n), 'data': {'user': n}, 'created': past,
             'expires': past, 'v': 1}
            for n in range(start, min(start + 10000, PURGE_POPULATION))], ordered=False)
    collection.insert_many([{'_id': document_id('live-%d' % n), 'data': {}, 'created': past,
                             'expires': future, 'v': 1} for n in range(100)])
    factory = factory_for(collection)
    reports = []
    removed = factory.maintenance.purge_expired(datetime.datetime(2026, 1, 1), batch_seconds=30,
                                  progress=lambda *report: reports.append(report))
    assert removed == PURGE_POPULATION
    assert collection.count_documents({}) == 100
    assert reports[-1][:2] == (PURGE_POPULATION, 1.0)
    assert [done for _, done, _ in reports] == sorted(done for _, done, _ in reports)


def test_purge_narrows_its_ranges_when_a_delete_fails(monkeypatch):
    """A delete that times out or refuses is retried over a narrower range."""
    import mongomock
    collection = mongomock.MongoClient().db.sessions
    # Expired for the purge's clock, not yet for mongomock's TTL index.
    later = datetime.datetime(2100, 1, 1)
    collection.insert_many([{'_id': document_id('s%d' % n), 'expires': later}
                            for n in range(500)])
    factory = factory_for(collection)
    real = factory.connection.call_long
    calls = []

    def flaky(what, seconds, operation, query):
        calls.append(query['_id'])
        if len(calls) <= 2:
            raise SessionBackendError('could not purge expired sessions: timed out')
        return real(what, seconds, operation, query)
    monkeypatch.setattr(factory.connection, 'call_long', flaky)
    assert factory.maintenance.purge_expired(datetime.datetime(2200, 1, 1)) == 500
    width = [int(ids['$lt'], 16) - int(ids['$gte'], 16) for ids in calls[:3]]
    assert width[1] == width[0] // 4 and width[2] == width[1] // 4
