"""An in-memory stand-in for a pymongo Collection, used only to measure CPU.

This is measurement tooling, not a backend: no test and no application uses
it. The benchmark hands it to pyramid_mongosession's ``MongoSessionFactory``
in place of a pymongo collection, so that a request runs the library's own
code (the session, its encoding, the store's queries and updates) and no
pymongo or BSON code at all. The client CPU per request measured so, minus
the same scenario's without any session library, is the "own code" column
of the benchmark's CPU table: what pyramid_mongosession itself costs,
the driver left out.

What it does, and no more:

- documents live in a dict keyed by ``_id`` and are handed out as copies
  (the document and its ``data`` sub-document; values are not copied: the
  library stores strings, bytes, numbers and datetimes). Nothing passes
  through BSON: encoding and decoding are the driver's CPU, which this stub
  is meant to leave out;
- a filter selects by its ``_id`` (a value, ``$eq`` or ``$in``); its other
  conditions (expiry, ``retired``, version, size) are ignored, which is
  right for the benchmark's scenarios, whose sessions are all live;
- updates apply ``$set``, ``$unset``, ``$inc``, ``$push`` (with ``$each``)
  and ``$setOnInsert`` on dotted paths (``data.x``), so that a later read
  sees a write, and replacements keep the ``_id``;
- index commands are accepted and do nothing; ``with_options`` returns the
  stub itself, and its client's options say that every wait is bounded
  (``options.timeout`` None; ``options.pool_options.socket_timeout`` and
  ``connect_timeout``, ``wait_queue_timeout`` and
  ``options.server_selection_timeout`` 5.0), as a MongoClient made with the
  benchmark's ``socketTimeoutMS``, ``connectTimeoutMS``,
  ``serverSelectionTimeoutMS`` and ``waitQueueTimeoutMS`` of 5000 has them: so
  the library decides about its per-call timeout as it does for that client;
  its client starts sessions that every call is given and ignores.
"""
import threading

from standin_mongo import apply_update

#: The stub client's socket, connect, server selection and pool timeouts, in seconds:
#: the benchmark's MongoClient's.
SOCKET_TIMEOUT = 5.0


class _Result:
    """What pymongo's result objects expose, the counts set from the call."""

    acknowledged = True

    def __init__(self, matched=0, deleted=0, inserted_id=None, upserted_id=None):
        self.matched_count = self.modified_count = matched
        self.deleted_count = deleted
        self.inserted_id = inserted_id
        self.upserted_id = upserted_id


#: The result of an update that matched a document (never changed by its readers).
_MATCHED = _Result(matched=1)


class _Namespace:
    """A plain object with attributes (the client's options, its pool options)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


class _Client:
    """Options as a MongoClient made with socketTimeoutMS, connectTimeoutMS,
    serverSelectionTimeoutMS and waitQueueTimeoutMS of 5000 has them (and no timeoutMS)."""

    def __init__(self):
        self.options = _Namespace(
            timeout=None, server_selection_timeout=SOCKET_TIMEOUT,
            pool_options=_Namespace(socket_timeout=SOCKET_TIMEOUT,
                                    connect_timeout=SOCKET_TIMEOUT,
                                    wait_queue_timeout=SOCKET_TIMEOUT, max_pool_size=100))

    def start_session(self, **options):
        return _Session()

    def close(self):
        pass


class _Session:
    """What the library keeps of a pymongo session: something to pass and to end."""

    def end_session(self):
        pass


class _Database:
    def __init__(self, name):
        self.name = name
        self.client = _Client()
        self.collections = {}

    def command(self, name, *args, **kwargs):
        if type(name) is dict and 'find' in name:
            # A find sent as the command itself (how the library reads a session).
            collection = self.collections[name['find']]
            found = collection.find_one(name.get('filter'), name.get('projection'))
            return {'cursor': {'id': 0, 'firstBatch': [] if found is None else [found]},
                    'ok': 1.0}
        if isinstance(name, str) and name.lower() == 'buildinfo':
            return {'version': '7.0.0', 'versionArray': [7, 0, 0, 0], 'ok': 1.0}
        return {'ok': 1.0}


def _selected(docs, query):
    """The ``_id`` values of the stored documents that ``query`` names."""
    if not query:
        return list(docs)
    wanted = query.get('_id')
    if type(wanted) is str:   # the common case: one document by its _id
        return [wanted] if wanted in docs else []
    if isinstance(wanted, dict):
        if '$eq' in wanted:
            values = [wanted['$eq']]
        elif '$in' in wanted:
            values = wanted['$in']
        else:
            return []
    elif wanted is None:
        return []
    else:
        values = [wanted]
    return [value for value in values if value in docs]


def _copy(doc):
    copied = dict(doc)
    data = copied.get('data')
    if isinstance(data, dict):
        copied['data'] = dict(data)
    return copied


def _projected(doc, projection):
    if not projection:
        return _copy(doc)
    if isinstance(projection, dict):
        included = [key for key, value in projection.items() if value and key != '_id']
        keep_id = projection.get('_id', 1)
    else:
        included, keep_id = list(projection), True
    out = {key: doc[key] for key in included if key in doc}
    if keep_id:
        out['_id'] = doc['_id']
    return out


class StubCollection:
    """A sessions collection in a dict: see the module's docstring."""

    def __init__(self, database='bench_stub', name='sessions'):
        self.name = name
        self.database = _Database(database)
        self.database.collections[name] = self
        self.full_name = '%s.%s' % (database, name)
        # What a pymongo Collection says of how it reads: the defaults.
        self.read_concern = _Namespace(document={})
        self.read_preference = None
        self.codec_options = None
        self.docs = {}
        self._lock = threading.Lock()   # the concurrency scenario's threads share it
        #: Calls answered (reads and writes).
        self.calls = 0

    def with_options(self, **options):
        return self

    # -- reads ------------------------------------------------------------------

    def find_one(self, filter=None, projection=None, *args, **kwargs):
        self.calls += 1
        with self._lock:
            wanted = filter.get('_id') if filter else None
            if type(wanted) is str and len(filter) == 1:   # how a session is read: at once
                found = self.docs.get(wanted)
                return None if found is None else _projected(found, projection)
            for key in _selected(self.docs, filter or {}):
                return _projected(self.docs[key], projection)
        return None

    def find(self, filter=None, projection=None, *args, **kwargs):
        self.calls += 1
        with self._lock:
            return iter([_projected(self.docs[key], projection)
                         for key in _selected(self.docs, filter or {})])

    def count_documents(self, filter, limit=0, **kwargs):
        self.calls += 1
        with self._lock:
            found = len(_selected(self.docs, filter))
        return min(found, limit) if limit else found

    def estimated_document_count(self, **kwargs):
        return len(self.docs)

    # -- writes ---------------------------------------------------------------------

    def insert_one(self, document, *args, **kwargs):
        self.calls += 1
        from pymongo.errors import DuplicateKeyError
        with self._lock:
            if document['_id'] in self.docs:
                raise DuplicateKeyError('E11000 duplicate key error (stub collection)')
            self.docs[document['_id']] = _copy(document)
        return _Result(inserted_id=document['_id'])

    def insert_many(self, documents, *args, **kwargs):
        for document in documents:
            self.insert_one(document)

    def update_one(self, filter, update, upsert=False, *args, **kwargs):
        self.calls += 1
        with self._lock:
            wanted = filter.get('_id')
            found = self.docs.get(wanted) if type(wanted) is str else None
            if found is not None:   # how a session is written: at once
                apply_update(found, update)
                return _MATCHED
            for key in _selected(self.docs, filter):
                apply_update(self.docs[key], update)
                return _Result(matched=1)
            if upsert and '_id' in filter and not isinstance(filter['_id'], dict):
                doc = {'_id': filter['_id']}
                apply_update(doc, update, inserting=True)
                self.docs[doc['_id']] = doc
                return _Result(upserted_id=doc['_id'])
        return _Result()

    def find_one_and_update(self, filter, update, *args, **kwargs):
        self.calls += 1
        with self._lock:
            for key in _selected(self.docs, filter):
                before = _copy(self.docs[key])
                apply_update(self.docs[key], update)
                return before
        return None

    #: apply_update takes a replacement as it takes operators.
    find_one_and_replace = find_one_and_update

    def find_one_and_delete(self, filter, *args, **kwargs):
        self.calls += 1
        with self._lock:
            for key in _selected(self.docs, filter):
                return self.docs.pop(key)
        return None

    def delete_one(self, filter, *args, **kwargs):
        self.calls += 1
        with self._lock:
            for key in _selected(self.docs, filter):
                del self.docs[key]
                return _Result(deleted=1)
        return _Result()

    def delete_many(self, filter, *args, **kwargs):
        self.calls += 1
        with self._lock:
            keys = _selected(self.docs, filter)
            for key in keys:
                del self.docs[key]
        return _Result(deleted=len(keys))

    # -- indexes: accepted, nothing done ---------------------------------------------

    def create_index(self, keys, **kwargs):
        return kwargs.get('name') or 'index'

    def create_indexes(self, models, **kwargs):
        return [getattr(model, 'document', {}).get('name', 'index') for model in models]

    def index_information(self, **kwargs):
        return {'_id_': {'key': [('_id', 1)], 'v': 2},
                'expires_ttl': {'key': [('expires', 1)], 'expireAfterSeconds': 0, 'v': 2}}

    def list_indexes(self, **kwargs):
        return iter([{'name': name, **spec} for name, spec in self.index_information().items()])

    def drop_indexes(self, **kwargs):
        pass

    def drop(self, **kwargs):
        with self._lock:
            self.docs.clear()
