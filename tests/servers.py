"""A MongoDB-compatible server for the test suite and the benchmark.

In this order: the server ``MONGODB_URL`` names; a ``mongod`` found on PATH,
started on a free port in a temporary directory; FerretDB 1.24.2 (Apache-2.0,
MongoDB wire-compatible) with its SQLite backend, built once with Go into a
cache directory. Servers started here listen on 127.0.0.1 only and are stopped
by the code that started them.
"""
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pymongo

FERRETDB_MODULE = 'github.com/FerretDB/FerretDB'
FERRETDB_VERSION = 'v1.24.2'
CACHE_DIR = os.environ.get('PYRAMID_MONGOSESSION_CACHE') or os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'pyramid_mongosession')


class NoServer(Exception):
    """No MongoDB-compatible server could be found or started."""


def die_with_parent():
    """``preexec_fn`` for servers: on Linux they get SIGTERM if the test process dies."""
    if sys.platform.startswith('linux'):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (AttributeError, OSError):
            pass


def stop_process(process, grace=10):
    """Terminate ``process``, killing it if it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_until_up(url, deadline=60.0):
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=500)
    try:
        end = time.monotonic() + deadline
        while True:
            try:
                client.admin.command('ping')
                return
            except pymongo.errors.PyMongoError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
    finally:
        client.close()


def ferretdb_binary():
    """Path of a FerretDB binary, building it with Go the first time."""
    binary = os.path.join(CACHE_DIR, 'ferretdb-' + FERRETDB_VERSION, 'ferretdb')
    if os.path.exists(binary):
        return binary
    go = shutil.which('go')
    if go is None:
        raise NoServer('no MONGODB_URL, no mongod on PATH, and no Go to build FerretDB with: '
                       'set MONGODB_URL=mongodb://... or install Go')
    # `go install ...@version` stops on the module proxy's refusal to list
    # FerretDB's versions, and a plain build panics without the version file
    # that FerretDB's release process generates: so download the module by
    # exact version, write that file into a copy, and build the copy.
    download = subprocess.run(
        [go, 'mod', 'download', '-json', FERRETDB_MODULE + '@' + FERRETDB_VERSION],
        capture_output=True, text=True, check=False)
    if download.returncode != 0:
        raise NoServer('could not download FerretDB: ' + download.stdout + download.stderr)
    module_dir = json.loads(download.stdout)['Dir']
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, 'ferretdb')
        shutil.copytree(module_dir, source)
        for root, dirs, files in os.walk(source):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        with open(os.path.join(source, 'build', 'version', 'version.txt'), 'w') as out:
            out.write(FERRETDB_VERSION + '\n')
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        build = subprocess.run(
            [go, 'build', '-o', binary + '.tmp', './cmd/ferretdb'],
            cwd=source, capture_output=True, text=True, check=False,
            env=dict(os.environ, GOFLAGS='-buildvcs=false'))
        if build.returncode != 0:
            raise NoServer('could not build FerretDB: ' + build.stdout + build.stderr)
    os.replace(binary + '.tmp', binary)
    return binary


class ServerProcess:
    """A mongod or FerretDB process on 127.0.0.1, which tests may stop, hang and restart."""

    def __init__(self, kind, binary):
        self.kind = kind
        self.binary = binary
        self.port = free_port()
        self.url = 'mongodb://127.0.0.1:%d' % self.port
        self.data_dir = tempfile.mkdtemp(prefix='pyramid_mongosession-%s-' % kind)
        self.log_path = os.path.join(self.data_dir, 'server.log')
        self.process = None

    def _argv(self):
        if self.kind == 'mongod':
            return [self.binary, '--dbpath', self.data_dir, '--port', str(self.port),
                    '--bind_ip', '127.0.0.1', '--quiet', '--logpath', self.log_path]
        return [self.binary, '--handler=sqlite', '--sqlite-url=file:%s/' % self.data_dir,
                '--listen-addr=127.0.0.1:%d' % self.port, '--debug-addr=-',
                '--telemetry=disable', '--state-dir=%s' % self.data_dir, '--log-level=warn']

    def start(self):
        log = open(self.log_path + '.out', 'ab')
        self.process = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.close()
        try:
            wait_until_up(self.url)
        except Exception:
            self.stop()
            raise NoServer('%s did not start; see %s' % (self.kind, self.log_path + '.out'))
        return self

    def kill(self):
        """Stop the server at once, as a crash would (SIGKILL)."""
        self.process.kill()
        self.process.wait()

    def pause(self):
        """Make the server hang: connections stay open, nothing answers (SIGSTOP)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)   # a paused server cannot exit
            stop_process(self.process)

    def close(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_server():
    """Start a local server (mongod if installed, else FerretDB); the caller closes it."""
    mongod = shutil.which('mongod')
    if mongod:
        return ServerProcess('mongod', mongod).start()
    return ServerProcess('ferretdb', ferretdb_binary()).start()


@contextlib.contextmanager
def mongodb_url():
    """Yield the URL of a MongoDB-compatible server for the duration of the block."""
    url = os.environ.get('MONGODB_URL')
    if url:
        yield url
        return
    server = start_server()
    try:
        yield server.url
    finally:
        server.close()
