"""MongoSessionFactory: options in, one session per request out."""
from __future__ import annotations

import datetime
import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pyramid.interfaces import ISessionFactory
from zope.interface import implementer

from .accounts import Accounts, SessionRecord
from .connection import Connection
from .cookie import SessionCookie
from .crypto import ValueCipher
from .documents import DocumentCodec, RetiredSession, StoredSession
from .encoding import utcnow
from .exceptions import SessionBackendError
from .expiry import Expiry
from .importers import Takeover
from .indexes import Indexes
from .lifecycle import EndOfRequest
from .maintenance import Maintenance
from .options import checked, seconds
from .session import MongoSession
from .state import SessionState
from .store import SessionStore
from .users import UserQueries

if TYPE_CHECKING:
    from pyramid.request import Request

log = logging.getLogger(__name__)

def _naive_utc(moment: datetime.datetime | None) -> datetime.datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


@implementer(ISessionFactory)
class MongoSessionFactory:
    """A Pyramid session factory that keeps sessions in a MongoDB collection.

    ``collection``
        The sessions collection: a pymongo :class:`~pymongo.collection.Collection`,
        or a callable returning one (evaluated on first use, once per process).
    ``secret``
        Signs the session cookie: a random string of at least 32 bytes
        (shorter ones raise :exc:`ValueError`), kept secret. Make one with
        ``python3 -c "import secrets; print(secrets.token_urlsafe(48))"``.

    Options, with their defaults (the ini settings of the same names are
    described in the configuration reference):

    - ``old_secrets=None``: a list of former secrets, still accepted when a
      cookie is verified (after ``secret``); a cookie that verifies only with
      one of them is sent again, signed with ``secret``, once its session is
      found live;
    - ``cookie_name='session'``, ``cookie_max_age=None`` (a browser-session
      cookie), ``cookie_path='/'``, ``cookie_domain=None``,
      ``cookie_secure=False``, ``cookie_httponly=True``,
      ``cookie_samesite='Lax'``;
    - ``timeout=1200``: idle seconds before a session expires, sliding; None
      for no idle timeout;
    - ``reissue_time=120``: a request that only reads moves the expiry
      forward when that gains at least this many seconds, so read-only
      traffic costs at most one write per window; 0 refreshes every request;
    - ``absolute_timeout=None``: seconds after its creation when a session
      ends however active it is;
    - ``detect_conflicts=False``: raise :class:`~pyramid_mongosession.SessionConflict`
      when another request wrote the session since this one loaded it,
      instead of merging by key;
    - ``operation_timeout=5.0``: the longest any one wait of a database
      call may take, in seconds (see ``docs/deployment.rst``: a client whose
      own waits are bounded by it gets no timeout around each call);
    - ``rotation_grace=60``: for this many seconds after ``change_id``
      retires an id, a request presenting it gets an empty session that is
      never stored, and its response leaves the cookie alone (so a request
      that started before a login cannot log the user out); 0 deletes the
      old document at once;
    - ``outage_probe_interval=5.0``: once a call finds MongoDB unreachable,
      calls fail at once for this many seconds; then one call tries again;
    - ``max_size=None``: refuse to store a session whose data exceeds this
      many bytes of BSON (MongoDB's own limit is 16 MB per document);
    - ``degrade_on_outage=False``: when MongoDB is down, serve an empty
      session that is not saved, with a logged warning, instead of raising
      :class:`~pyramid_mongosession.SessionBackendError`;
    - ``is_cacheable=publicly_cacheable``: ``callable(request, response)``;
      when it returns true the response gets no session cookie and nothing is
      written (by default: responses marked ``Cache-Control: public``);
    - ``encryption_keys=None``: a list of base64 AES-256 keys (or one string
      of them separated by white space) to encrypt session values at rest;
      the first encrypts, all decrypt. Needs the ``encryption`` extra;
    - ``user_key='auth.userid'``: the session key whose value is the user id
      (where Pyramid's ``SessionAuthenticationHelper`` keeps it); each write
      that changes it also indexes the session under that user, for
      :meth:`user_sessions`, :meth:`revoke_session` and :meth:`revoke_user`.
      None: sessions belong to no user;
    - ``track_clients=True``: record the User-Agent and the client's network
      (IPv4 /24, IPv6 /48) when a session is created and at each
      ``change_id``, for the user's list of sessions;
    - ``max_sessions_per_user=None``: when a session gets a user who then has
      more live sessions than this, the least recently seen are revoked;
    - ``importer=None``: ``callable(request)``, consulted when a request
      brings no valid session cookie of ours, returning the visitor's session
      of the library used before (a mapping) or None; a session it returns is
      stored at once as a new one (see :mod:`pyramid_mongosession.importers`);
    - ``import_until=None``: a :class:`~datetime.datetime` (naive: UTC) after
      which the importer is no longer consulted.

    Constructing the factory does no I/O.
    """

    def __init__(self, collection: Any, secret: str, **options: Any) -> None:
        settings = checked(options)
        timeout = seconds(settings['timeout'])
        reissue_time = seconds(settings['reissue_time'])
        assert reissue_time is not None   # checked refused None
        max_age = settings['cookie_max_age']
        keys = settings['encryption_keys']
        cap = settings['max_sessions_per_user']
        user_key = settings['user_key']
        #: The signed session-id cookie (:class:`~pyramid_mongosession.cookie.SessionCookie`).
        self.cookie = SessionCookie(
            secret, name=settings['cookie_name'], max_age=max_age,
            path=settings['cookie_path'], domain=settings['cookie_domain'],
            secure=settings['cookie_secure'], httponly=settings['cookie_httponly'],
            samesite=settings['cookie_samesite'], old_secrets=settings['old_secrets'],
        )
        #: Where the sessions are kept (:class:`~pyramid_mongosession.connection.Connection`).
        self.connection = Connection(collection, operation_timeout=settings['operation_timeout'],
                                     outage_probe_interval=settings['outage_probe_interval'])
        codec = DocumentCodec(cipher=ValueCipher(keys) if keys else None,
                              user_key=user_key or None, max_size=settings['max_size'])
        #: The indexes (:class:`~pyramid_mongosession.indexes.Indexes`), created on first use.
        self.indexes = Indexes(self.connection, codec.user_key)
        self.connection.first_use.append(self.indexes.ensure)
        #: The request path's documents (:class:`~pyramid_mongosession.store.SessionStore`).
        self.store = SessionStore(self.connection, codec,
                                  detect_conflicts=settings['detect_conflicts'])
        #: Purge, counts, sizes (:class:`~pyramid_mongosession.maintenance.Maintenance`).
        self.maintenance = Maintenance(self.connection)
        #: Users and their sessions (:class:`~pyramid_mongosession.accounts.Accounts`).
        self.accounts = Accounts(self.store, UserQueries(self.connection, codec),
                                 track_clients=bool(settings['track_clients']),
                                 max_sessions_per_user=cap)
        self.degrade_on_outage = settings['degrade_on_outage']
        expiry = Expiry(timeout, reissue_time, seconds(settings['absolute_timeout']))
        self._end_of_request = EndOfRequest(
            self.store, self.cookie, expiry, self.accounts,
            is_cacheable=settings['is_cacheable'], degrade_on_outage=self.degrade_on_outage,
            rotation_grace=seconds(settings['rotation_grace']))
        #: Takes over the sessions of the library used before (``importer``), or None.
        self.takeover = None if settings['importer'] is None else Takeover(
            settings['importer'], self.store, self.cookie, self.accounts, expiry,
            until=_naive_utc(settings['import_until']), degrade_on_outage=self.degrade_on_outage,
            cookie_path=settings['cookie_path'], cookie_domain=settings['cookie_domain'],
            is_cacheable=settings['is_cacheable'])

    def __call__(self, request: Request) -> MongoSession:
        session_id, resign = self.cookie.read(request)
        if session_id is None:
            takeover = self.takeover
            taken = takeover.take(request) if takeover is not None else None
            if takeover is not None and taken is not None:
                self._end_of_request.register(request, taken[0])
                takeover.register(request, *taken)   # after the end of the request
                return MongoSession(taken[0])
            state = SessionState(had_cookie=self.cookie.sent(request) is not None,
                                 user_key=self.store.user_key)
        else:
            # Loaded on the first read (see MongoSession), and not before.
            state = SessionState(session_id, True,
                                 functools.partial(self._load, session_id, weakref.ref(request)),
                                 user_key=self.store.user_key)
            state.resign = resign
        self._end_of_request.register(request, state)
        return MongoSession(state)

    def _load(self, session_id: str, request: Callable[[], Request | None] | None = None
              ) -> tuple[StoredSession | None, bool, bool]:
        """``(stored session or None, degraded, retired)`` for the id a request's cookie named.

        ``request`` is a weak reference to the request (for :class:`SessionExpired`
        events), so that the session does not keep its request alive.
        """
        try:
            # Whether anything subscribes to SessionExpired is asked only of an expired session.
            found = self.store.load(session_id, utcnow(),
                                    functools.partial(self.accounts.publish_expired, request))
        except SessionBackendError as exc:
            if not self.degrade_on_outage:
                raise
            log.warning('serving an empty session that will not be saved: %s', exc)
            return None, True, False
        if isinstance(found, RetiredSession):
            return None, False, True
        return found, False, False

    def revoke(self, query: Mapping[str, Any]) -> int:
        """Delete every session whose data matches ``query``; return how many.

        ``query`` maps session keys to values or MongoDB query operators::

            factory = request.registry.getUtility(ISessionFactory)
            factory.revoke({'user_id': 42})     # log user 42 out everywhere

        Encrypted values (``encryption_keys``) cannot be matched.
        """
        return self.maintenance.revoke(query)

    def ensure_indexes(self) -> bool:
        """Create the TTL index now (it is otherwise created on first use)."""
        return self.indexes.ensure()

    # -- users and their sessions (see pyramid_mongosession.accounts) -------------

    def user_sessions(self, userid: Any) -> list[SessionRecord]:
        """The live sessions of ``userid``, newest first: a list of
        :class:`~pyramid_mongosession.accounts.SessionRecord` (``handle``,
        ``created``, ``last_seen``, ``expires``, ``user_agent``,
        ``client_address``). One indexed query."""
        return self.accounts.user_sessions(userid)

    def revoke_session(self, handle: str, userid: Any = None,
                       request: Request | None = None) -> bool:
        """End the session named by ``handle`` (only if it is ``userid``'s, when
        given); return True if it was there. ``request`` (by default the
        current one) is what the :class:`~pyramid_mongosession.SessionEnded`
        event carries."""
        return self.accounts.revoke_session(handle, userid, request)

    def revoke_user(self, userid: Any, keep: str | None = None,
                    request: Request | None = None) -> int:
        """End every session of ``userid`` but the one whose handle is
        ``keep``; return how many. ``keep=request.session.handle``: sign out
        everywhere else."""
        return self.accounts.revoke_user(userid, keep, request)
