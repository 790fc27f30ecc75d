"""The capability probes (tests/probes.py) that choose servers for the tests that need them."""
import time
import uuid

from . import probes


class ReadModifyWrite:
    """A collection that updates a document as FerretDB 1.x does: read it, change
    it, write it back, with nothing to stop another update in between."""

    def __init__(self, collection):
        self.collection = collection

    def __getattr__(self, name):
        return getattr(self.collection, name)

    def update_one(self, query, update):
        document = self.collection.find_one(query)
        document.update(update['$set'])
        document['n'] += update['$inc']['n']
        time.sleep(0.001)
        self.collection.replace_one(query, document)


def test_the_atomic_probe_sees_lost_updates(pooled_atomic_client):
    # The control: the same workload done by read-modify-write loses updates,
    # even on a server whose own updates are atomic.
    database = pooled_atomic_client['probe_%s' % uuid.uuid4().hex[:16]]
    try:
        assert probes.lost_updates(database) == 0
        assert probes.lost_updates({'atomic': ReadModifyWrite(database['atomic'])}) > 0
    finally:
        pooled_atomic_client.drop_database(database.name)


def test_the_main_server_measures_as_documented(mongodb_url, client, probed):
    found = probed(mongodb_url)
    if 'ferretdbVersion' in client.admin.command('buildInfo'):
        # docs/compatibility.rst: FerretDB 1.x loses concurrent updates of one
        # document and refuses TTL indexes.
        assert (found.atomic_updates, found.ttl_index) == (False, 'refused')
    else:
        # Any other server must apply each update atomically, as MongoDB does:
        # the merge of concurrent requests relies on it (docs/concurrency.rst).
        assert found.atomic_updates, 'this server loses concurrent updates of one document'


def test_mongo_java_server_measures_as_documented(mongo_java_server_url, probed):
    # docs/compatibility.rst: atomic updates; TTL indexes accepted, never acted on.
    found = probed(mongo_java_server_url)
    assert (found.atomic_updates, found.ttl_index) == (True, 'accepted')
