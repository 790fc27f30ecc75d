"""A stand-in MongoDB server that answers at once, for measuring client CPU.

Run as its own process (``python3 standin_mongo.py [--port N]``; port 0, the
default, takes a free one): it listens on 127.0.0.1 and prints ``port N`` on
its standard output once it accepts connections. :func:`standin_server`
starts and stops it from the benchmark, and :func:`self_check` checks it
through pymongo.

It speaks the wire protocol that pymongo 4 uses (OP_MSG, and OP_QUERY for
the legacy handshake) and answers the handful of commands that the session
libraries send, with replies shaped as MongoDB's are. It is not a database:

- documents live in a dict per collection, keyed by ``_id``, and die with the
  process;
- a filter selects by ``_id`` alone: a value, ``{'$eq': v}`` or
  ``{'$in': [...]}``; its other predicates are ignored. An empty filter
  selects every document, and a filter naming no ``_id`` value (``$regex``,
  or no ``_id`` at all) selects none;
- updates know ``$set``, ``$unset``, ``$inc``, ``$setOnInsert``, ``$push``
  and ``$pull`` (dotted paths included) and replacement documents;
- each command is handled whole before the next (one lock), so concurrent
  updates of one document never undo each other, as in MongoDB.

It announces itself as a standalone MongoDB 7.0 (wire version 21) that
supports sessions, as FerretDB 1.24 does, so that pymongo does the same work
for it as for that server.
"""
import argparse
import contextlib
import datetime
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import bson
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
_HEADER = struct.Struct('<iiii')
_INT32 = struct.Struct('<i')
_UINT32 = struct.Struct('<I')
_CODEC = bson.CodecOptions(document_class=dict, tz_aware=False)

WIRE_VERSION = 21
VERSION = '7.0.0'


class CommandError(Exception):
    def __init__(self, code, name, message):
        super().__init__(message)
        self.code, self.name = code, name


def _key(value):
    """A dict key for an ``_id`` value (documents and lists are not hashable)."""
    if isinstance(value, (dict, list)):
        return bson.encode({'': value})
    return value


def _walk(doc, path, create):
    if '.' not in path:
        return doc, path
    parts = path.split('.')
    for part in parts[:-1]:
        child = doc.get(part)
        if not isinstance(child, dict):
            if not create:
                return None, parts[-1]
            child = doc[part] = {}
        doc = child
    return doc, parts[-1]


def apply_update(doc, update, inserting=False):
    """Apply ``update`` (operators or a replacement) to ``doc`` in place, as a server
    would for the operators the libraries send (the stub collection uses it too)."""
    if isinstance(update, list):
        raise CommandError(9, 'FailedToParse', 'the stand-in has no update pipelines')
    if not next(iter(update), '').startswith('$'):   # (a server refuses a mix of both)
        doc_id = doc.get('_id')
        doc.clear()
        doc['_id'] = doc_id
        doc.update((k, v) for k, v in update.items() if k != '_id')
        return
    # One operator at a time, and a path without a dot set in place: the stub
    # collection's CPU is counted in the benchmark's "own code" column.
    for operator, fields in update.items():
        if operator == '$set' or operator == '$setOnInsert':
            if operator == '$setOnInsert' and not inserting:
                continue
            for path, value in fields.items():
                parent, name = _walk(doc, path, True) if '.' in path else (doc, path)
                parent[name] = value
        elif operator == '$inc':
            for path, step in fields.items():
                parent, name = _walk(doc, path, True) if '.' in path else (doc, path)
                parent[name] = parent.get(name, 0) + step
        elif operator == '$unset':
            for path in fields:
                parent, name = _walk(doc, path, False)
                if parent is not None:
                    parent.pop(name, None)
        elif operator == '$push':
            for path, value in fields.items():
                parent, name = _walk(doc, path, True)
                items = value['$each'] if isinstance(value, dict) and '$each' in value else [value]
                parent[name] = list(parent.get(name) or ()) + list(items)
        elif operator == '$pull':
            for path, value in fields.items():
                parent, name = _walk(doc, path, False)
                if parent is not None and isinstance(parent.get(name), list):
                    parent[name] = [item for item in parent[name] if item != value]
        else:
            raise CommandError(9, 'FailedToParse', 'the stand-in does not know %s' % operator)


class Store:
    """Collections of documents, keyed by ``(database, collection)`` then by ``_id``."""

    def __init__(self):
        self.collections = {}
        self.connections = 0
        self.commands = 0

    def collection(self, db, name, create=False):
        key = (db, name)
        found = self.collections.get(key)
        if found is None:
            found = {}
            if create:
                self.collections[key] = found
        return found

    # -- selection and updates ------------------------------------------------

    @staticmethod
    def selected(docs, query):
        """The keys of the documents ``query`` selects (see the module's docstring)."""
        if not query:
            return list(docs)
        if '_id' not in query:
            return []
        wanted = query['_id']
        if isinstance(wanted, dict) and wanted and all(k.startswith('$') for k in wanted):
            if set(wanted) == {'$eq'}:
                values = [wanted['$eq']]
            elif set(wanted) == {'$in'}:
                values = wanted['$in']
            else:
                return []
        else:
            values = [wanted]
        keys = []
        for value in values:
            key = _key(value)
            if key in docs:
                keys.append(key)
        return keys

    def apply(self, doc, update, inserting=False):
        """Apply ``update`` (operators or a replacement) to ``doc`` in place."""
        apply_update(doc, update, inserting)

    def upserted(self, docs, query, update):
        """Insert the document an upsert makes; return its ``_id``."""
        doc = {}
        wanted = query.get('_id')
        if wanted is not None and not (isinstance(wanted, dict)
                                       and any(k.startswith('$') for k in wanted)):
            doc['_id'] = wanted
        elif isinstance(wanted, dict) and set(wanted) == {'$eq'}:
            doc['_id'] = wanted['$eq']
        self.apply(doc, update, inserting=True)
        if '_id' not in doc:
            doc['_id'] = bson.ObjectId()
        docs[_key(doc['_id'])] = doc
        return doc['_id']

    # -- commands ------------------------------------------------------------------

    def run(self, body, sequences):
        self.commands += 1
        name = next(iter(body))
        handler = getattr(self, 'cmd_' + name.lower(), None)
        if handler is None:
            return {'ok': 0.0, 'errmsg': 'no such command: %r' % name, 'code': 59,
                    'codeName': 'CommandNotFound'}
        try:
            reply = handler(body, body.get('$db', 'test'), sequences)
        except CommandError as exc:
            return {'ok': 0.0, 'errmsg': str(exc), 'code': exc.code, 'codeName': exc.name}
        except Exception as exc:  # the client gets it, as a server error
            return {'ok': 0.0, 'errmsg': 'stand-in: %s: %r' % (name, exc), 'code': 1,
                    'codeName': 'InternalError'}
        reply['ok'] = 1.0
        return reply

    def cmd_hello(self, body, db, sequences, legacy=False):
        reply = {
            'helloOk': True,
            'isWritablePrimary': True,
            'maxBsonObjectSize': 16 * 1024 * 1024,
            'maxMessageSizeBytes': 48000000,
            'maxWriteBatchSize': 100000,
            'localTime': datetime.datetime.now(datetime.timezone.utc),
            'logicalSessionTimeoutMinutes': 30,
            'connectionId': self.connections,
            'minWireVersion': 0,
            'maxWireVersion': WIRE_VERSION,
            'readOnly': False,
        }
        if legacy:
            reply['ismaster'] = True
        return reply

    def cmd_ismaster(self, body, db, sequences):
        return self.cmd_hello(body, db, sequences, legacy=True)

    def cmd_ping(self, body, db, sequences):
        return {}

    def cmd_buildinfo(self, body, db, sequences):
        return {'version': VERSION, 'versionArray': [7, 0, 0, 0], 'bits': 64,
                'maxBsonObjectSize': 16 * 1024 * 1024, 'standin': True}

    def cmd_endsessions(self, body, db, sequences):
        return {}

    def cmd_killcursors(self, body, db, sequences):
        return {'cursorsKilled': [], 'cursorsNotFound': body.get('cursors', []),
                'cursorsAlive': [], 'cursorsUnknown': []}

    def cmd_standinstats(self, body, db, sequences):
        """Not MongoDB's: this process's CPU time, commands answered, and process id."""
        return {'cpu': time.process_time(), 'commands': self.commands, 'pid': os.getpid()}

    def _ns(self, db, body, name):
        return '%s.%s' % (db, body[name])

    def cmd_find(self, body, db, sequences):
        docs = self.collection(db, body['find'])
        keys = self.selected(docs, body.get('filter') or {})
        limit = abs(body.get('limit') or 0)
        if limit:
            keys = keys[:limit]
        return {'cursor': {'firstBatch': [docs[k] for k in keys], 'id': Int64(0),
                           'ns': self._ns(db, body, 'find')}}

    def cmd_getmore(self, body, db, sequences):
        return {'cursor': {'nextBatch': [], 'id': Int64(0),
                           'ns': '%s.%s' % (db, body.get('collection'))}}

    def cmd_insert(self, body, db, sequences):
        docs = self.collection(db, body['insert'], create=True)
        errors, n = [], 0
        for index, doc in enumerate(body.get('documents') or sequences.get('documents', ())):
            key = _key(doc.get('_id'))
            if key in docs:
                errors.append({'index': index, 'code': 11000, 'errmsg':
                               'E11000 duplicate key error collection: %s index: _id_ '
                               'dup key: { _id: %r }' % (self._ns(db, body, 'insert'),
                                                         doc.get('_id'))})
                if body.get('ordered', True):
                    break
                continue
            docs[key] = doc
            n += 1
        reply = {'n': n}
        if errors:
            reply['writeErrors'] = errors
        return reply

    def cmd_update(self, body, db, sequences):
        docs = self.collection(db, body['update'], create=True)
        n = modified = 0
        upserted = []
        for index, spec in enumerate(body.get('updates') or sequences.get('updates', ())):
            keys = self.selected(docs, spec.get('q') or {})
            if not spec.get('multi'):
                keys = keys[:1]
            if keys:
                for key in keys:
                    self.apply(docs[key], spec['u'])
                n += len(keys)
                modified += len(keys)
            elif spec.get('upsert'):
                upserted.append({'index': index,
                                 '_id': self.upserted(docs, spec.get('q') or {}, spec['u'])})
                n += 1
        reply = {'n': n, 'nModified': modified}
        if upserted:
            reply['upserted'] = upserted
        return reply

    def cmd_delete(self, body, db, sequences):
        docs = self.collection(db, body['delete'])
        n = 0
        for spec in body.get('deletes') or sequences.get('deletes', ()):
            keys = self.selected(docs, spec.get('q') or {})
            if spec.get('limit'):
                keys = keys[:1]
            for key in keys:
                del docs[key]
            n += len(keys)
        return {'n': n}

    def cmd_findandmodify(self, body, db, sequences):
        name = body.get('findAndModify') or body.get('findandmodify')
        docs = self.collection(db, name, create=True)
        query = body.get('query') or {}
        keys = self.selected(docs, query)[:1]
        if body.get('remove'):
            if not keys:
                return {'lastErrorObject': {'n': 0}, 'value': None}
            return {'lastErrorObject': {'n': 1}, 'value': docs.pop(keys[0])}
        update = body.get('update')
        if update is None:
            raise CommandError(9, 'FailedToParse', 'findAndModify needs remove or update')
        if keys:
            doc = docs[keys[0]]
            before = RawBSONDocument(bson.encode(doc, codec_options=_CODEC))
            self.apply(doc, update)
            return {'lastErrorObject': {'n': 1, 'updatedExisting': True},
                    'value': doc if body.get('new') else before}
        if body.get('upsert'):
            doc_id = self.upserted(docs, query, update)
            return {'lastErrorObject': {'n': 1, 'updatedExisting': False, 'upserted': doc_id},
                    'value': docs[_key(doc_id)] if body.get('new') else None}
        return {'lastErrorObject': {'n': 0, 'updatedExisting': False}, 'value': None}

    def cmd_count(self, body, db, sequences):
        docs = self.collection(db, body['count'])
        return {'n': len(self.selected(docs, body.get('query') or {}))}

    def cmd_aggregate(self, body, db, sequences):
        """``$match`` (by the rules above), ``$skip``, ``$limit`` and a counting ``$group``."""
        docs = self.collection(db, body['aggregate'])
        keys, counted = list(docs), None
        for stage in body.get('pipeline', []):
            (operator, argument), = stage.items()
            if counted is not None:
                raise CommandError(9, 'FailedToParse', 'the stand-in stops at $group')
            if operator == '$match':
                kept = set(keys)
                keys = [key for key in self.selected(docs, argument) if key in kept]
            elif operator == '$skip':
                keys = keys[argument:]
            elif operator == '$limit':
                keys = keys[:argument]
            elif operator == '$group':
                counted = [{'_id': argument.get('_id'), 'n': len(keys)}] if keys else []
            else:
                raise CommandError(9, 'FailedToParse', 'the stand-in does not know %s' % operator)
        batch = counted if counted is not None else [docs[key] for key in keys]
        return {'cursor': {'firstBatch': batch, 'id': Int64(0),
                           'ns': self._ns(db, body, 'aggregate')}}

    def cmd_createindexes(self, body, db, sequences):
        self.collection(db, body['createIndexes'], create=True)
        return {'createdCollectionAutomatically': False, 'numIndexesBefore': 1,
                'numIndexesAfter': 1 + len(body.get('indexes', ()))}

    def cmd_listindexes(self, body, db, sequences):
        return {'cursor': {'firstBatch': [{'v': 2, 'key': {'_id': 1}, 'name': '_id_'}],
                           'id': Int64(0), 'ns': self._ns(db, body, 'listIndexes')}}

    def cmd_listcollections(self, body, db, sequences):
        names = [name for (d, name) in self.collections if d == db]
        return {'cursor': {'firstBatch': [{'name': name, 'type': 'collection', 'options': {},
                                           'info': {'readOnly': False}} for name in names],
                           'id': Int64(0), 'ns': '%s.$cmd.listCollections' % db}}

    def cmd_drop(self, body, db, sequences):
        self.collections.pop((db, body['drop']), None)
        return {}

    def cmd_dropdatabase(self, body, db, sequences):
        for key in [key for key in self.collections if key[0] == db]:
            del self.collections[key]
        return {}


# -- starting it, and checking it through pymongo -------------------------------------

class NoStandin(Exception):
    """The stand-in did not start, or answered pymongo wrongly."""


@contextlib.contextmanager
def standin_server():
    """Start the stand-in in its own process; yield its URL; stop it (also on error)."""
    errors = tempfile.TemporaryFile(mode='w+')
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=errors, text=True, preexec_fn=_die_with_parent)
    try:
        line = process.stdout.readline()
        process.stdout.close()
        if not line.startswith('port '):
            process.kill()
            process.wait()
            errors.seek(0)
            raise NoStandin('the stand-in MongoDB server did not start: %s'
                            % (line + errors.read()).strip())
        yield 'mongodb://127.0.0.1:%d' % int(line.split()[1])
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        errors.close()


def _die_with_parent():
    if sys.platform.startswith('linux'):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (AttributeError, OSError):
            pass


def server_pid(url):
    """The stand-in's process id (to pin it to a CPU)."""
    import pymongo
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        return client.admin.command('standinStats')['pid']


def server_cpu(url):
    """CPU seconds the stand-in has used, and the commands it has answered."""
    import pymongo
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        stats = client.admin.command('standinStats')
    return stats['cpu'], stats['commands']


def self_check(url):
    """Round trips through pymongo, each answer checked; return how many operations ran.

    Raises :class:`NoStandin` naming the first answer that was wrong.
    """
    import pymongo
    from pymongo.errors import DuplicateKeyError
    checks = []

    def expect(what, got, wanted):
        checks.append(what)
        if got != wanted:
            raise NoStandin('stand-in self-check, %s: got %r, wanted %r' % (what, got, wanted))

    when = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000)
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        expect('ping', client.admin.command('ping')['ok'], 1.0)
        expect('buildInfo', client.admin.command('buildInfo')['version'], VERSION)
        database = client['standin_self_check']
        collection = database['sessions']
        collection.create_index('expires', expireAfterSeconds=0)
        collection.insert_one({'_id': 'a', 'data': {'user': 'u', 'n': 1}, 'expires': when,
                               'v': 1, 'blob': bson.Binary(b'\x00\x01')})
        expect('find by _id', collection.find_one({'_id': 'a', 'expires': {'$gt': when}}),
               {'_id': 'a', 'data': {'user': 'u', 'n': 1}, 'expires': when, 'v': 1,
                'blob': b'\x00\x01'})
        expect('find a missing _id', collection.find_one({'_id': 'b'}), None)
        try:
            collection.insert_one({'_id': 'a'})
            expect('duplicate insert', 'accepted', 'DuplicateKeyError')
        except DuplicateKeyError:
            checks.append('duplicate insert')
        result = collection.update_one({'_id': 'a', 'expires': {'$not': {'$lte': when}}},
                                       {'$set': {'data.k': 'x'}, '$inc': {'v': 1},
                                        '$unset': {'data.n': ''}})
        expect('update counts', (result.matched_count, result.modified_count), (1, 1))
        expect('update applied', collection.find_one({'_id': 'a'})['data'],
               {'user': 'u', 'k': 'x'})
        expect('update of a missing _id', collection.update_one(
            {'_id': 'b'}, {'$set': {'x': 1}}).matched_count, 0)
        result = collection.update_one({'_id': 'c'}, {'$set': {'value': 1}}, upsert=True)
        expect('upsert', (result.upserted_id, collection.find_one({'_id': 'c'})),
               ('c', {'_id': 'c', 'value': 1}))
        expect('insert_many', len(collection.insert_many(
            [{'_id': 'm%d' % i} for i in range(3)]).inserted_ids), 3)
        expect('count_documents', collection.count_documents({'_id': 'a'}, limit=1), 1)
        expect('find_one_and_update (after)', collection.find_one_and_update(
            {'_id': 'a'}, {'$set': {'data.k': 'y'}},
            return_document=pymongo.ReturnDocument.AFTER)['data']['k'], 'y')
        expect('find_one_and_update (before)', collection.find_one_and_update(
            {'_id': 'a'}, {'$set': {'data.k': 'z'}})['data']['k'], 'y')
        expect('find_one_and_delete', collection.find_one_and_delete({'_id': 'a'})['data'],
               {'user': 'u', 'k': 'z'})
        expect('find after find_one_and_delete', collection.find_one({'_id': 'a'}), None)
        expect('delete_one', collection.delete_one({'_id': 'c'}).deleted_count, 1)
        expect('delete_many by $regex selects nothing', collection.delete_many(
            {'_id': {'$regex': '^m'}}).deleted_count, 0)
        expect('delete_many by $in', collection.delete_many(
            {'_id': {'$in': ['m0', 'm1']}}).deleted_count, 2)
        expect('list_collection_names', database.list_collection_names(), ['sessions'])
        expect('delete_many({})', collection.delete_many({}).deleted_count, 1)
        client.drop_database('standin_self_check')
        expect('drop_database', database.list_collection_names(), [])
    return len(checks)


# -- the wire protocol ----------------------------------------------------------------

def _cstring(data, offset):
    end = data.index(b'\x00', offset)
    return data[offset:end].decode('utf-8'), end + 1


def _op_msg(data):
    """Body and document sequences of an OP_MSG (header stripped); and moreToCome."""
    flags, = _UINT32.unpack_from(data, 0)
    end = len(data) - (4 if flags & 1 else 0)   # checksumPresent
    offset, body, sequences = 4, None, {}
    while offset < end:
        kind = data[offset]
        offset += 1
        size, = _INT32.unpack_from(data, offset)
        if kind == 0:
            body = bson.decode(data[offset:offset + size], _CODEC)
        else:
            identifier, start = _cstring(data, offset + 4)
            sequences[identifier] = bson.decode_all(data[start:offset + size], _CODEC)
        offset += size
    return body, sequences, bool(flags & 2)


def handle(store, opcode, request_id, message):
    """The reply to one message (None when none is due)."""
    if opcode == OP_MSG:
        body, sequences, more_to_come = _op_msg(message)
        reply = store.run(body, sequences)
        if more_to_come:
            return None
        payload = b'\x00\x00\x00\x00\x00' + bson.encode(reply, codec_options=_CODEC)
        return _HEADER.pack(16 + len(payload), 0, request_id, OP_MSG) + payload
    if opcode == OP_QUERY:
        collection, offset = _cstring(message, 4)
        size, = _INT32.unpack_from(message, offset + 8)
        query = bson.decode(message[offset + 8:offset + 8 + size], _CODEC)
        if '$query' in query:
            query = query['$query']
        query.setdefault('$db', collection.split('.', 1)[0])
        reply = store.run(query, {})
        document = bson.encode(reply, codec_options=_CODEC)
        payload = struct.pack('<iqii', 0, 0, 0, 1) + document
        return _HEADER.pack(16 + len(payload), 0, request_id, OP_REPLY) + payload
    raise ConnectionError('unknown opcode %d' % opcode)


def serve_connection(store, lock, sock):
    """One client connection, in its own thread; commands run one at a time (``lock``)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    with sock:
        try:
            while True:
                while len(buffer) < 16 or len(buffer) < _INT32.unpack_from(buffer, 0)[0]:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    buffer += data
                length, request_id, _, opcode = _HEADER.unpack_from(buffer, 0)
                message = bytes(buffer[16:length])
                del buffer[:length]
                with lock:
                    reply = handle(store, opcode, request_id, message)
                if reply is not None:
                    sock.sendall(reply)
        except (ConnectionError, OSError):
            pass


def serve(port, announce):
    store = Store()
    lock = threading.Lock()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(('127.0.0.1', port))
    listener.listen(128)
    announce(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        with lock:
            store.connections += 1
        threading.Thread(target=serve_connection, args=(store, lock, sock), daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--port', type=int, default=0, help='0 (the default): a free port')
    args = parser.parse_args(argv)

    def announce(port):
        sys.stdout.write('port %d\n' % port)
        sys.stdout.flush()
    try:
        serve(args.port, announce)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
