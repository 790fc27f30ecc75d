"""Users and their sessions: "your active sessions", sign out one, sign out everywhere else.

The session key ``user_key`` (``auth.userid`` by default, where Pyramid's
:class:`~pyramid.authentication.SessionAuthenticationHelper` keeps the user
id) names the user a session belongs to. Every write that changes that key
also sets the document's top-level ``user`` field, which a partial index on
``user`` and ``expires`` covers: a user's sessions are one indexed query, and
when the TTL monitor or a revocation deletes a session its index entry goes
with it. Besides, each session document carries:

``handle``
    A stable, non-secret name for the session (see
    :func:`~pyramid_mongosession.documents.session_handle`), kept across
    ``change_id``: what a page of "your sessions" shows and posts back.
``last_seen``
    Set by every write the session gets anyway — its changes, and the expiry
    refresh of read-only requests once per ``reissue_time`` — so it costs no
    write of its own and is accurate to ``reissue_time``.
``client``
    The User-Agent (its first :data:`USER_AGENT_LENGTH` characters) and the
    client's network (IPv4 /24, IPv6 /48), recorded when the session is
    created and at each ``change_id``; not with ``track_clients = false``.

With ``encryption_keys``, ``user`` holds a keyed hash of the user id and
``client`` is encrypted (see :doc:`accounts`).

:class:`Accounts` holds what the factory offers (``user_sessions``,
``revoke_session``, ``revoke_user``) and what the end of a request calls; the
events of :mod:`pyramid_mongosession.events` tell an application, or its
audit log, what happened.
"""
from __future__ import annotations

import collections
import datetime
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pyramid.interfaces import ISessionFactory
from pyramid.threadlocal import get_current_registry, get_current_request

from .documents import CLIENT, HANDLE, LAST_SEEN, USER, document_id, session_handle
from .encoding import is_user_id, utcnow
from .events import (
    CAP, EXPIRE, INVALIDATE, REVOKE, SessionCreated, SessionEnded, SessionExpired,
    SessionIdChanged, notify, wants)
from .exceptions import NoSuchSession

if TYPE_CHECKING:
    from .state import SessionState
    from .store import SessionStore
    from .users import UserQueries


log = logging.getLogger(__name__)

#: How many characters of the User-Agent header are kept.
USER_AGENT_LENGTH = 200
#: How much of the client's address is kept: its network, of this prefix length.
IPV4_PREFIX, IPV6_PREFIX = 24, 48

_EPOCH = datetime.datetime(1970, 1, 1)
#: Session keys that look like a user id, lower case, without ``_``, ``.`` or
#: ``-``: a session that has one but not ``user_key`` is logged, once.
USER_LOOKING_KEYS = frozenset((
    'user', 'userid', 'uid', 'username', 'login', 'accountid', 'currentuser',
    'loggedinuser', 'authuserid', 'authuser'))


def _request_of(state: SessionState) -> Any:
    """The request of a session's state (held by a weak reference), or None."""
    reference = state.request
    return reference() if reference is not None else None


# -- what a user sees -----------------------------------------------------------------

class SessionRecord(collections.namedtuple(
        'SessionRecord', 'handle created last_seen expires user_agent client_address')):
    """One session of a user, as :meth:`Accounts.user_sessions` lists it.

    Times are naive UTC datetimes (``expires`` None when no timeout
    applies); ``user_agent`` and ``client_address`` are None when not
    recorded (``track_clients = false``, or a session stored before they
    were).
    """

    def as_dict(self) -> dict[str, Any]:
        """The record as a dict, times in ISO 8601 (for JSON)."""
        return {name: value.isoformat() + 'Z' if isinstance(value, datetime.datetime) else value
                for name, value in self._asdict().items()}


def client_address(address: str | None) -> str | None:
    """The network of ``address``: ``'203.0.113.0/24'``, ``'2001:db8:1::/48'``; None if
    it is not an IP address. An IPv4-mapped IPv6 address counts as IPv4."""
    try:
        ip = ipaddress.ip_address((address or '').strip())
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network('%s/%d' % (ip, prefix), strict=False))


def client_of(request: Any) -> dict[str, str] | None:
    """What is recorded about the client of ``request``, or None.

    The address is the WSGI ``REMOTE_ADDR``, never a header the client
    could forge: behind a proxy, have the server set it from the proxy's
    header (waitress's ``trusted_proxy``, for one).
    """
    client = {}
    agent = request.user_agent
    if agent:
        client['agent'] = agent[:USER_AGENT_LENGTH]
    address = client_address(request.remote_addr)
    if address:
        client['address'] = address
    return client or None


def get_session_factory(request: Any) -> Any:
    """The :class:`~pyramid_mongosession.MongoSessionFactory` of ``request``'s application.

    A view's way to its sessions API::

        factory = get_session_factory(request)
        factory.revoke_user(request.authenticated_userid, keep=request.session.handle)

    Raises :exc:`LookupError` when the application's session factory is another.
    """
    factory = request.registry.queryUtility(ISessionFactory)
    if not isinstance(getattr(factory, 'accounts', None), Accounts):
        raise LookupError('the session factory of this application is not a '
                          'MongoSessionFactory: %r' % (factory,))
    return factory


class Accounts:
    """Which user each session belongs to; listing, revoking, capping; the events.

    Built by the factory (``factory.accounts``) from its ``store`` (the
    request path's documents), its ``users`` (the queries of users'
    sessions) and the ``track_clients`` and ``max_sessions_per_user``
    options; the store's ``user_key`` names the session key of the user id.
    """

    def __init__(self, store: SessionStore, users: UserQueries, track_clients: bool = True,
                 max_sessions_per_user: int | None = None) -> None:
        self.store = store
        self.users = users
        self.codec = users.codec
        self.track_clients = track_clients
        self.max_sessions_per_user = max_sessions_per_user
        self._user_key_checked = False   # see check_user_key

    @property
    def user_key(self) -> str | None:
        return self.store.user_key

    # -- the API ------------------------------------------------------------------------

    def user_sessions(self, userid: Any) -> list[SessionRecord]:
        """The live sessions of ``userid``: :class:`SessionRecord`\\ s, newest first.

        One query, on the partial index of ``user`` and ``expires``.
        """
        records = [self._record(document)
                   for document in self._distinct(self.users.live(userid, utcnow()))]
        records.sort(key=lambda record: (record.created or _EPOCH, record.handle), reverse=True)
        return records

    def revoke_session(self, handle: str, userid: Any = None, request: Any = None) -> bool:
        """End the session named by ``handle``; return True if it was there.

        With ``userid``, only if it is that user's session: what a view that
        lets a user sign out one of their sessions passes, so that a handle
        posted by one user can never end another's. Only sessions that
        belong to a user can be revoked so (the handle index holds no
        other). The session is deleted: every request that presents it from
        then on gets a new, empty session.
        """
        return bool(self._revoke(request, userid=userid, handles=[handle]))

    def revoke_user(self, userid: Any, keep: str | None = None, request: Any = None) -> int:
        """End every session of ``userid``, except the one whose handle is ``keep``.

        Returns how many were ended (a session that had expired but was still
        stored is deleted and counted too: nothing of the user's sessions is
        left behind). ``keep=request.session.handle`` signs the
        user out everywhere else (after a password change, say); without it,
        everywhere. One delete on the user index, or, when something
        subscribes to :class:`SessionEnded`, one query and one delete per
        session, to report each. A session moving to a new id at that
        moment (``change_id``) is ended too.

        A ``keep`` that is not the handle of one of the user's live sessions
        (nor of the current request's session) raises :exc:`NoSuchSession`
        and revokes nothing; checking it costs one more query, except for
        the current request's own handle.
        """
        if keep is not None:
            self._check_kept(userid, keep, request)
        return self._revoke(request, userid=userid, keep=keep)

    def _check_kept(self, userid: Any, keep: str, request: Any) -> None:
        if request is None:
            request = get_current_request()
        # The request's own session, if it made one (request.session is reified).
        session = getattr(request, '__dict__', {}).get('session')
        if keep == getattr(session, 'handle', None):
            return
        if any(document.get(HANDLE) == keep
               for document in self.users.live(userid, utcnow())):
            return
        raise NoSuchSession('keep=%r is not the handle of a live session of user %r: '
                            'nothing was revoked' % (keep, userid))

    def export(self, userid: Any) -> list[dict[str, Any]]:
        """Everything stored about ``userid``'s sessions, values decrypted, newest first.

        See :meth:`~pyramid_mongosession.users.UserQueries.export`.
        """
        exported = self.users.export(userid)
        exported.sort(key=lambda entry: (entry.get('created') or _EPOCH, entry[HANDLE] or ''),
                      reverse=True)
        return exported

    def _record(self, document: dict[str, Any]) -> SessionRecord:
        client = self.codec.client_of(document) or {}
        return SessionRecord(document[HANDLE], document.get('created'),
                             document.get(LAST_SEEN), document.get('expires'),
                             client.get('agent'), client.get('address'))

    @staticmethod
    def _distinct(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One document per handle: a session is briefly under two ids while it moves."""
        latest: dict[str, dict[str, Any]] = {}
        for document in documents:
            other = latest.get(document[HANDLE])
            if other is None or (document.get(LAST_SEEN) or _EPOCH) > (other.get(LAST_SEEN)
                                                                       or _EPOCH):
                latest[document[HANDLE]] = document
        return list(latest.values())

    def _revoke(self, request: Any, reason: str = REVOKE, **which: Any) -> int:
        # Outside a request, the events go to the current registry: the
        # application's in a script run under pyramid.paster.bootstrap().
        if request is None:
            request = get_current_request()
        registry = request.registry if request is not None else get_current_registry()
        if not wants(registry, SessionEnded):
            return self.users.revoke(**which)
        ended: dict[Any, Any] = {}
        for handle, userid in self.users.pop(**which):
            ended.setdefault(handle, userid)
        for handle, userid in ended.items():
            registry.notify(SessionEnded(request, handle, userid, reason))
        return len(ended)

    def _enforce_cap(self, request: Any, userid: Any, now: datetime.datetime) -> None:
        """Revoke the least recently seen sessions of ``userid`` beyond the cap.

        Concurrent logins of one user each run this after their own write.
        Each keeps the first ``max_sessions_per_user`` sessions it sees in
        one total order (``last_seen``, then handle, latest first) and
        revokes the others by handle. A session among the first of all the
        sessions is among the first of any subset that holds it, so no run
        revokes it; and the run that lists last sees every session, so it
        revokes all the others: exactly the cap survives.
        """
        cap = self.max_sessions_per_user
        assert cap is not None
        sessions = self._distinct(self.users.live(userid, now))
        if len(sessions) <= cap:
            return
        sessions.sort(key=lambda document: (document.get(LAST_SEEN) or _EPOCH,
                                            document[HANDLE]), reverse=True)
        self._revoke(request, reason=CAP, userid=userid,
                     handles=[document[HANDLE] for document in sessions[cap:]])

    # -- what the end of a request writes ------------------------------------------------

    def handle(self, state: SessionState) -> str | None:
        """The handle of the session ``state`` holds, or None while it has no id."""
        if state.id is None:
            return None
        stored = state.stored
        if stored is None:
            return session_handle(document_id(state.id))
        handle: str = stored.account[HANDLE]
        return handle

    def insert_fields(self, state: SessionState, now: datetime.datetime,
                     handle: str | None = None) -> dict[str, Any]:
        """The account fields of the document inserted for ``state``: a new session, or,
        given its ``handle``, one that moves to a new id. ``user`` is the store's."""
        assert state.id is not None
        account: dict[str, Any] = {
            HANDLE: handle or session_handle(document_id(state.id)), LAST_SEEN: now}
        request = _request_of(state)
        if self.track_clients and request is not None:
            client = client_of(request)
            if client is not None:
                account[CLIENT] = client
        return account

    def update_fields(self, state: SessionState, now: datetime.datetime) -> dict[str, Any]:
        """The account fields of a write to the stored session of ``state``.

        ``last_seen``, and a ``user`` hashed under a retired key hashed again.
        ``user`` follows the request's own changes in the store.
        """
        account: dict[str, Any] = {LAST_SEEN: now}
        stored = state.stored
        if stored is not None and stored.user is not None:
            user = self.codec.user_value(stored.user)
            if stored.account.get(USER) != user:
                account[USER] = user
        return account

    def check_user_key(self, written: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        """Log once (per process) a write of a key that looks like a user id
        (``user_id``, ``userid``, ``user``...) to a session without ``user_key``.

        Such sessions belong to no user: ``user_sessions``, ``revoke_user``
        and ``max_sessions_per_user`` find none of them. ``written`` is what
        the request wrote, ``data`` the whole session after it (a request
        that did not read its session is not checked: its data is not known).
        """
        key = self.user_key
        if self._user_key_checked or key is None or data.get(key) is not None:
            return
        for name in written:
            if (isinstance(name, str) and name != key and name.lower().replace('_', '').replace(
                    '.', '').replace('-', '') in USER_LOOKING_KEYS):
                self._user_key_checked = True
                log.warning(
                    'a session has the key %r, which looks like a user id, but no '
                    '%r (mongodb_session.user_key): such sessions belong to no user, and '
                    'user_sessions(), revoke_user() and max_sessions_per_user find none '
                    'of them. Store the user id with Pyramid\'s SessionAuthenticationHelper '
                    '(under %r), or set mongodb_session.user_key = %s (said once per process)',
                    name, key, 'auth.userid', name)
                return

    def created(self, state: SessionState, account: dict[str, Any]) -> None:
        """After a new session's insert: the cap, and :class:`SessionCreated`."""
        self.check_user_key(state.data, state.data)
        userid, request = self._userid(state.data), _request_of(state)
        notify(request, SessionCreated, account[HANDLE], userid)
        if userid is not None and self.max_sessions_per_user is not None:
            self._enforce_cap(request, userid, account[LAST_SEEN])

    def moved(self, state: SessionState, previous: Any, account: dict[str, Any]) -> None:
        """After ``change_id``: the cap if the user is new to the session, and
        :class:`SessionIdChanged`. ``previous`` is the user id before the move."""
        self.check_user_key(state.data, state.data)
        userid, request = self._userid(state.data), _request_of(state)
        notify(request, SessionIdChanged, account[HANDLE], userid)
        if (userid is not None and self.max_sessions_per_user is not None
                and self.codec.user_value(userid) != self.codec.user_value(previous)):
            self._enforce_cap(request, userid, account[LAST_SEEN])

    def updated(self, state: SessionState, changed: dict[str, Any],
                now: datetime.datetime) -> None:
        """After an update that wrote ``changed``: the cap, if it gave the session a user.

        A write-only request does not know the user before: a write of the
        user key counts as associating it (enforcing the cap again is harmless).
        """
        if state.stored is not None:   # (a request that did not read: nothing to check)
            self.check_user_key(changed, state.data)
        key = self.user_key
        if (self.max_sessions_per_user is None or key is None
                or changed.get(key) is None):
            return
        stored = state.stored
        if stored is not None and self.codec.user_value(stored.user) == self.codec.user_value(
                changed[key]):
            return
        self._enforce_cap(_request_of(state), changed[key], now)

    def remove_ended(self, state: SessionState) -> bool | None:
        """Delete the session that ``state``'s request ended (``expire``, ``invalidate()``).

        With a subscriber to :class:`SessionEnded`, a session the request did
        not read is deleted by a find-and-delete that returns its handle and
        user (still one round trip). Returns whether a session was deleted
        (a tombstone never is), or None if the delete failed (it was logged).
        """
        assert state.cookie_id is not None
        request = _request_of(state)
        registry: Any = getattr(request, 'registry', None)
        if not wants(registry, SessionEnded):
            return self.store.remove(state.cookie_id)
        reason = EXPIRE if state.flags['expire'] else INVALIDATE
        stored = state.stored
        if stored is not None:
            removed = self.store.remove(state.cookie_id)
            if removed:
                registry.notify(SessionEnded(request, stored.account.get(HANDLE), stored.user,
                                             reason))
            return removed
        gone = self.store.pop_ended(state.cookie_id)
        if isinstance(gone, tuple):
            registry.notify(SessionEnded(request, gone[0], gone[1], reason))
        return None if gone is None else bool(gone)

    def publish_expired(self, request: Callable[[], Any] | None, handle: Any,
                        userid: Any) -> None:
        """For :meth:`SessionStore.load`: publish :class:`SessionExpired` for a session found
        expired, if anything subscribes. ``request`` is a weak reference to the request."""
        notify(request() if request is not None else None, SessionExpired, handle, userid)

    def _userid(self, data: dict[str, Any]) -> Any:
        key = self.user_key
        value = data.get(key) if key is not None else None
        return value if value is None or is_user_id(value) else None
