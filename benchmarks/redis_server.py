"""A throw-away ``redis-server`` on 127.0.0.1, for pyramid_session_redis.

The server keeps nothing on disk, listens on a free loopback port and is
stopped when the ``with`` block ends, also on error (``tests/servers.py``
starts it: the test suite uses the same code). It runs as a
least-recently-used cache (``maxmemory`` with ``allkeys-lru``), the set-up
that pyramid_session_redis's documentation pairs with ``set_redis_ttl=False``
(see ``libraries.py``): abandoned sessions are evicted when memory runs short.
"""
import contextlib

from tests.servers import NoRedis, redis_server_binary
from tests.servers import redis_server as _redis_server

__all__ = ['MAXMEMORY', 'NoRedis', 'redis_server', 'redis_server_binary']

#: Far more than the benchmark stores: nothing is evicted during a run.
MAXMEMORY = '2gb'


@contextlib.contextmanager
def redis_server():
    """Start redis-server on a free loopback port; yield its port; stop it."""
    try:
        with _redis_server(maxmemory=MAXMEMORY, policy='allkeys-lru') as port:
            yield port
    except NoRedis as exc:
        raise NoRedis('%s, or leave pyramid_session_redis out with --libraries' % exc) from None
