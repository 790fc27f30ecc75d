"""A throw-away ``redis-server`` on 127.0.0.1, for pyramid_session_redis.

The server keeps nothing on disk, listens on a free loopback port and is
stopped when the ``with`` block ends, also on error. It runs as a
least-recently-used cache (``maxmemory`` with ``allkeys-lru``), the set-up
that pyramid_session_redis's documentation pairs with ``set_redis_ttl=False``
(see ``libraries.py``): abandoned sessions are evicted when memory runs short.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

from tests.servers import free_port, stop_process


#: Far more than the benchmark stores: nothing is evicted during a run.
MAXMEMORY = '2gb'


class NoRedis(Exception):
    """redis-server is not installed and could not be installed."""


def redis_server_binary():
    """Path of ``redis-server``; installs Debian's package when running as root."""
    binary = shutil.which('redis-server')
    if binary:
        return binary
    if os.name != 'posix' or os.geteuid() != 0 or not shutil.which('apt-get'):
        raise NoRedis('redis-server is not installed: install it first '
                      '(Debian/Ubuntu: sudo apt-get install -y redis-server), '
                      'or leave pyramid_session_redis out with --libraries')
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


def _ping(port):
    with socket.create_connection(('127.0.0.1', port), timeout=1) as sock:
        sock.sendall(b'PING\r\n')
        return sock.recv(64).startswith(b'+PONG')


@contextlib.contextmanager
def redis_server():
    """Start redis-server on a free loopback port; yield its port; stop it."""
    binary = redis_server_binary()
    port = free_port()
    work = tempfile.mkdtemp(prefix='bench-redis-')
    argv = [binary, '--bind', '127.0.0.1', '--port', str(port), '--protected-mode', 'yes',
            '--save', '', '--appendonly', 'no', '--dir', work, '--daemonize', 'no',
            '--logfile', os.path.join(work, 'redis.log'),
            '--maxmemory', MAXMEMORY, '--maxmemory-policy', 'allkeys-lru']
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if _ping(port):
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
