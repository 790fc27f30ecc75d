"""MongoDB-compatible servers for the test suite and the benchmark.

The main server, in this order: the server ``MONGODB_URL`` names; a ``mongod``
found on PATH, started on a free port in a temporary directory; FerretDB 1.24.2
(Apache-2.0, MongoDB wire-compatible) with its SQLite backend, built once with
Go into a cache directory.

A second server for the tests that need a capability the main server may lack
(see ``tests/probes.py``): mongo-java-server (BSD) with its in-memory backend,
which applies each update to a document atomically. Its jars are fetched once
with Maven from Maven Central into the cache directory, and its launcher
(``tests/java/MongoJavaServerLauncher.java``) is compiled there with javac.

Servers started here listen on 127.0.0.1 only and are stopped by the code that
started them.
"""
import contextlib
import ctypes
import hashlib
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
import pymongo.common

FERRETDB_MODULE = 'github.com/FerretDB/FerretDB'
FERRETDB_VERSION = 'v1.24.2'
MONGO_JAVA_SERVER_VERSION = '1.47.0'
MAVEN_DEPENDENCY_PLUGIN_VERSION = '3.8.1'
LAUNCHER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'java',
                               'MongoJavaServerLauncher.java')
CACHE_DIR = os.environ.get('PYRAMID_MONGOSESSION_CACHE') or os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'pyramid_mongosession')


class NoServer(Exception):
    """No MongoDB-compatible server could be found or started."""


#: None, or a function called with a description of the server before one is
#: used or started here: the test suite checks with it that only the tests
#: marked ``server`` use one (see ``tests/conftest.py``).
before_use = None


def _using(what):
    if before_use is not None:
        before_use(what)


def _say(message):
    print('tests/servers.py: ' + message, file=sys.stderr, flush=True)


#: How a long step (a build, a download) is announced while it runs: a
#: function of one line. On standard error by default; the test suite shows
#: it past pytest's output capture (see ``tests/conftest.py``).
say = _say


@contextlib.contextmanager
def _announced(what, done):
    """Say what starts (it takes minutes), and when it is done."""
    started = time.monotonic()
    say(what)
    yield
    say('%s in %.0f s' % (done, time.monotonic() - started))


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
    with _announced('building FerretDB %s once into %s (Go downloads its modules first; '
                    'about a minute and a half, and about 1 GB of Go caches)'
                    % (FERRETDB_VERSION, os.path.dirname(binary)),
                    'built FerretDB %s' % FERRETDB_VERSION):
        _build_ferretdb(go, binary)
    return binary


def _build_ferretdb(go, binary):
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


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tests</groupId>
  <artifactId>mongo-java-server-jars</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>de.bwaldvogel</groupId>
      <artifactId>mongo-java-server-memory-backend</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def _run(argv, what, **kwargs):
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, **kwargs)
    if done.returncode != 0:
        raise NoServer('%s failed (%s exited with %d): %s' % (
            what, os.path.basename(argv[0]), done.returncode, (done.stdout + done.stderr)[-4000:]))


def _publish(built, target):
    """Move a finished directory into place; another process may have done so first."""
    try:
        os.replace(built, target)
    except OSError:
        if not os.path.isdir(target):
            raise


def mongo_java_server_classpath():
    """Java classpath of mongo-java-server and its launcher, fetching and compiling them once."""
    tools = {name: shutil.which(name) for name in ('java', 'javac', 'mvn')}
    missing = sorted(name for name, path in tools.items() if path is None)
    if missing:
        raise NoServer('mongo-java-server needs %s: run tests/setup.sh' % ', '.join(missing))
    home = os.path.join(CACHE_DIR, 'mongo-java-server-' + MONGO_JAVA_SERVER_VERSION)
    lib = os.path.join(home, 'lib')
    if not os.path.isdir(lib):
        os.makedirs(home, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=home) as work:
            with open(os.path.join(work, 'pom.xml'), 'w') as out:
                out.write(POM.format(version=MONGO_JAVA_SERVER_VERSION,
                                     plugin=MAVEN_DEPENDENCY_PLUGIN_VERSION))
            with _announced('fetching mongo-java-server %s once with Maven into %s (about '
                            '30 MB)' % (MONGO_JAVA_SERVER_VERSION, home),
                            'fetched mongo-java-server %s' % MONGO_JAVA_SERVER_VERSION):
                _run([tools['mvn'], '-B', '-q', '--strict-checksums',
                      '-f', os.path.join(work, 'pom.xml'),
                      '-Dmaven.repo.local=' + os.path.join(CACHE_DIR, 'maven-repository'),
                      'dependency:copy-dependencies', '-DincludeScope=runtime',
                      '-DoutputDirectory=' + os.path.join(work, 'lib')],
                     'fetching mongo-java-server with Maven', cwd=work)
            _publish(os.path.join(work, 'lib'), lib)
    jars = os.path.join(lib, '*')
    # The launcher is compiled into a directory named after its source's
    # digest, so that an edited launcher is compiled afresh.
    with open(LAUNCHER_SOURCE, 'rb') as source:
        digest = hashlib.sha256(source.read()).hexdigest()[:16]
    classes = os.path.join(home, 'launcher-' + digest)
    if not os.path.isdir(classes):
        with tempfile.TemporaryDirectory(dir=home) as work:
            with _announced('compiling the mongo-java-server launcher into %s' % classes,
                            'compiled the launcher'):
                _run([tools['javac'], '-d', os.path.join(work, 'classes'), '-cp', jars,
                      LAUNCHER_SOURCE], 'compiling the mongo-java-server launcher')
            _publish(os.path.join(work, 'classes'), classes)
    return os.pathsep.join([classes, jars])


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
        except Exception as exc:
            self.stop()
            raise NoServer('%s did not start; see %s'
                           % (self.kind, self.log_path + '.out')) from exc
        return self

    def kill(self):
        """Stop the server at once, as a crash would (SIGKILL)."""
        self.process.kill()
        self.process.wait()

    def pause(self):
        """Make the server hang: connections stay open, nothing answers (SIGSTOP).

        Returns once the process is stopped: a signal is delivered
        asynchronously, and a request sent at once could still be answered.
        """
        self.process.send_signal(signal.SIGSTOP)
        stat = '/proc/%d/stat' % self.process.pid
        deadline = time.monotonic() + 5
        while os.path.exists(stat) and time.monotonic() < deadline:
            with open(stat) as f:
                # The state follows the command name, which is in parentheses.
                if f.read().rpartition(')')[2].split()[0] in ('T', 't'):
                    return
            time.sleep(0.005)

    def resume(self):
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)   # a paused server cannot exit
            stop_process(self.process)

    def close(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class MongoJavaServerProcess(ServerProcess):
    """mongo-java-server's in-memory backend on 127.0.0.1: its data dies with the process."""

    def __init__(self, classpath):
        super().__init__('mongo-java-server', shutil.which('java'))
        self.classpath = classpath

    def _argv(self):
        version, wire_version = announced_version()
        return [self.binary, '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xmx512m',
                '-cp', self.classpath, 'MongoJavaServerLauncher',
                '127.0.0.1', str(self.port), version, str(wire_version)]


# MongoDB releases and their wire versions. mongo-java-server announces itself
# as 5.0 with wire version 8, which current pymongo refuses; its launcher
# announces instead the oldest release the installed pymongo accepts, so that
# pymongo sends it nothing newer than it needs to.
WIRE_VERSIONS = [(9, '4.4.0'), (13, '5.0.0'), (17, '6.0.0'), (21, '7.0.0'), (25, '8.0.0')]


def announced_version():
    """The version and wire version that the mongo-java-server launcher announces."""
    minimum = getattr(pymongo.common, 'MIN_SUPPORTED_WIRE_VERSION', 9)
    for wire_version, version in WIRE_VERSIONS:
        if wire_version >= minimum:
            return version, wire_version
    raise NoServer('pymongo %s needs wire version %d or later; add it to WIRE_VERSIONS'
                   % (pymongo.version, minimum))


def start_mongo_java_server():
    """Start mongo-java-server (fetching and compiling it the first time); the caller closes it."""
    _using('mongo-java-server')
    return MongoJavaServerProcess(mongo_java_server_classpath()).start()


def start_server():
    """Start a local server (mongod if installed, else FerretDB); the caller closes it."""
    _using('a server process')
    mongod = shutil.which('mongod')
    if mongod:
        return ServerProcess('mongod', mongod).start()
    return ServerProcess('ferretdb', ferretdb_binary()).start()


@contextlib.contextmanager
def mongodb_url():
    """Yield the URL of a MongoDB-compatible server for the duration of the block."""
    url = os.environ.get('MONGODB_URL')
    if url:
        _using('the server MONGODB_URL names')
        yield url
        return
    server = start_server()
    try:
        yield server.url
    finally:
        server.close()


# -- redis-server: the store of pyramid_session_redis (the benchmark, the import tests) -------

class NoRedis(Exception):
    """redis-server is not installed and could not be installed."""


def redis_server_binary():
    """Path of ``redis-server``; installs Debian's package when running as root."""
    binary = shutil.which('redis-server')
    if binary:
        return binary
    if os.name != 'posix' or os.geteuid() != 0 or not shutil.which('apt-get'):
        raise NoRedis('redis-server is not installed: install it first '
                      '(Debian/Ubuntu: sudo apt-get install -y redis-server)')
    print('redis-server is not installed: installing it with apt-get', flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for argv in (['apt-get', 'update', '-qq'],
                 ['apt-get', 'install', '-y', '-qq', 'redis-server']):
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            raise NoRedis('%s failed: %s' % (' '.join(argv), done.stderr.strip()))
    binary = shutil.which('redis-server') or '/usr/bin/redis-server'
    if not os.path.exists(binary):
        raise NoRedis('apt-get installed redis-server, but it is not on PATH')
    return binary


def _redis_ping(port):
    with socket.create_connection(('127.0.0.1', port), timeout=1) as sock:
        sock.sendall(b'PING\r\n')
        return sock.recv(64).startswith(b'+PONG')


@contextlib.contextmanager
def redis_server(maxmemory=None, policy='allkeys-lru'):
    """Start redis-server on a free loopback port, keeping nothing on disk; yield
    its port; stop it, also on error. ``maxmemory`` (e.g. ``'2gb'``) makes it a
    least-recently-used cache that evicts by ``policy``."""
    _using('redis-server')
    binary = redis_server_binary()
    port = free_port()
    work = tempfile.mkdtemp(prefix='test-redis-')
    argv = [binary, '--bind', '127.0.0.1', '--port', str(port), '--protected-mode', 'yes',
            '--save', '', '--appendonly', 'no', '--dir', work, '--daemonize', 'no',
            '--logfile', os.path.join(work, 'redis.log')]
    if maxmemory is not None:
        argv += ['--maxmemory', maxmemory, '--maxmemory-policy', policy]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if _redis_ping(port):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise NoRedis('redis-server did not start (exit status %s)' % process.poll())
            time.sleep(0.05)
        yield port
    finally:
        stop_process(process)
        shutil.rmtree(work, ignore_errors=True)
