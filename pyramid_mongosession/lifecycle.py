"""The end of a request: what is written to MongoDB and what the cookie says.

The factory registers :class:`EndOfRequest` as a response callback, so
responses made by exception views follow the same rules. It works in two
steps:

1. :func:`~pyramid_mongosession.plan.decide` turns the session's options and
   state into a :class:`~pyramid_mongosession.plan.Plan` (a cookie action and
   a store action) while the headers are still open; its cases are the
   precedence rules of ``docs/options.rst``, in order.
2. The plan is carried out at once, or, under ``late_store``, when the WSGI
   server closes the body. An ended session (``expire``, ``invalidate()``)
   is deleted with the headers, and again at the end if it ended while the
   body streamed.
"""
from __future__ import annotations

import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable

from .cookie import new_session_id
from .encoding import utcnow
from .exceptions import SessionBackendError, SessionConflict
from .plan import (
    CLEAR, INSERT, KEEP, LEAVE_ALONE, MOVE, NEW_ID, NOTHING, UPDATE, Outcome, Plan, decide)
from .store import UNCHANGED
from .streaming import BodyThenFinish, keeping_request
from .tween import FINISH

if TYPE_CHECKING:
    import datetime

    from pyramid.request import Request
    from pyramid.response import Response

    from .accounts import Accounts
    from .cookie import SessionCookie
    from .expiry import Expiry
    from .state import SessionState
    from .store import SessionStore

log = logging.getLogger(__name__)

def publicly_cacheable(request: Request, response: Response) -> bool:
    """The default ``is_cacheable`` check: ``Cache-Control: public`` responses.

    A shared cache would hand such a response, session cookie included, to
    other users; so it gets no session cookie, and nothing is written.
    """
    # Most responses have no Cache-Control: skip parsing one then (and skip
    # building the headers' view, which costs more than this loop).
    for name, _ in response.headerlist:
        if name.lower() == 'cache-control':
            return bool(response.cache_control.public)
    return False




class EndOfRequest:
    """Decides and carries out the end of a request (see :meth:`register`).

    The factory builds it from its collaborators: the ``store`` of session
    documents, the ``cookie``, the ``expiry`` rules and the ``accounts``
    (users, the cap, the events).
    """

    def __init__(self, store: SessionStore, cookie: SessionCookie, expiry: Expiry,
                 accounts: Accounts, is_cacheable: Callable[[Request, Response], bool]
                 = publicly_cacheable, degrade_on_outage: bool = False,
                 rotation_grace: datetime.timedelta | None = None) -> None:
        self.store = store
        self.accounts = accounts
        self.cookie = cookie
        self.expiry = expiry
        self.is_cacheable = is_cacheable
        self.degrade_on_outage = degrade_on_outage
        self.rotation_grace = rotation_grace

    def register(self, request: Request, state: SessionState) -> None:
        """Have the end of ``request`` run once for this session.

        As a response callback; or earlier, by
        :func:`~pyramid_mongosession.tween.session_tween_factory`
        where it is installed, so that a failure to store renders the
        application's exception view.
        """
        # A weak reference: the request holds its session, which must not hold
        # the request back, or every request would wait for the cyclic GC.
        state.request, state.accounts = weakref.ref(request), self.accounts
        finish = functools.partial(self, state)
        request.__dict__[FINISH] = finish
        request.add_response_callback(finish)

    def __call__(self, state: SessionState, request: Request, response: Response) -> None:
        """The end of the request: run once, by the tween or else as a response callback."""
        if state.ended:
            return
        state.ended = True
        if state.found is None and self._must_load(state):
            state.ensure_loaded()
        if state.degraded:
            return self._degraded(state, response)
        if state.retired:
            return self._retired(state)
        if self._read_only(state):
            return   # the most common request of all: see _read_only
        plan = decide(state.flags, state.may_exist, state.invalidated,
                      bool(state.data or state.pushes), state.had_cookie)
        if plan == LEAVE_ALONE and not (state.flags['late_store'] or state.resign):
            return   # nothing to do: a new session that stayed empty, or no_store
        if self.is_cacheable(request, response):
            log.debug('left the session alone on a publicly cacheable response to %s',
                      request.path)
            return
        self._carry_out(plan, state, response)

    def _read_only(self, state: SessionState) -> bool:
        """Whether the request only read a stored session, and its expiry needs no refresh.

        Then nothing is written and no cookie is sent: the plan would be to
        update nothing and keep the cookie. Spelled out here so that the
        most common request skips the plan's machinery.
        """
        if not state.found or (state.dirty or state.pushes or state.snapshots
                               or state.invalidated or state.own_timeout_set or state.resign
                               or True in state.flags.values()):
            return False
        return self.expiry.refreshed(state.created, state.expires, utcnow(),
                                     state.own_timeout) is None

    def _carry_out(self, plan: Plan, state: SessionState, response: Response) -> None:
        now = utcnow()   # one clock reading for the expiry and the write
        refresh = self._refresh(plan, state, now)
        if not self._still_this_requests(plan, state, refresh):
            return
        if plan.cookie != KEEP:
            state.id = new_session_id() if plan.cookie == NEW_ID else None
        if state.flags['late_store']:
            self._set_cookie(plan, state, response, refresh)
            finish = keeping_request(state, functools.partial(
                self._finish_late, plan, state, state.id, refresh))
            length = response.content_length   # WebOb forgets it when app_iter changes
            response.app_iter = BodyThenFinish(response.app_iter, finish)
            response.content_length = length
        else:
            # The write goes first: a session found gone by a write that did
            # not read it first still gets the cookie it needs.
            plan, refresh = self._store(plan, state, refresh, now) or (plan, refresh)
            self._set_cookie(plan, state, response, refresh)

    def _still_this_requests(self, plan: Plan, state: SessionState,
                             refresh: datetime.datetime | None) -> bool:
        """Delete an ended session; False if the id ended or was retired while the request
        ran. A cookie sent again before a write can tell (an old secret's, or under
        late_store) goes only for a session found still live (one query)."""
        # An ended session goes now, whatever happens to the body.
        if plan.remove_loaded and self.accounts.remove_ended(state) is False:
            if state.found:
                self._gone(state)   # it was live when loaded: ended or retired since
                return False
            if state.found is None:
                # A logout that did not read: nothing was deleted. A retired id's
                # logout must not clear the new login's cookie (one more query).
                state.reload()
                if state.retired:
                    self._retired(state)
                    return False
        unconfirmed = state.resign or state.flags['late_store']
        if (unconfirmed and plan.cookie == KEEP and state.found
                and self._resends(plan, state, refresh) and not self._confirm(state)):
            self._gone(state)
            return False
        return True

    def _refresh(self, plan: Plan, state: SessionState,
                 now: datetime.datetime) -> datetime.datetime | None:
        """The expiry a request that changes nothing moves a stored session to, if one is due."""
        if plan.store != UPDATE or not state.found:
            return None
        return self.expiry.refreshed(state.created_by(now), state.expires, now,
                                     state.own_timeout)

    def _must_load(self, state: SessionState) -> bool:
        """Whether the end of the request must load a session that the view never read.

        A write may go without a read unless the body streams (late_store: the
        cookie is decided first), the store takes it only with the session in
        hand (:meth:`SessionStore.can_write_blind`), or ``absolute_timeout``
        caps the expiry. ``change_id`` always loads (the new document is
        written before the old one goes), and so does a cookie signed with an
        old secret (signed anew only for a live session); a logout does not.
        """
        flags = state.flags
        if flags['late_store'] or flags['change_id'] or state.resign:
            return True
        if flags['no_store'] or flags['expire']:
            return False   # (expire: one delete, see _carry_out)
        if state.own_timeout_set:
            return True    # the expiry and the cookie follow the session's own timeout
        if not (state.dirty or state.pushes):
            return False
        if self.expiry.absolute is not None:
            return True
        return not self.store.can_write_blind(state.assigned(), state.pushes)

    def _gone(self, state: SessionState) -> Outcome:
        """The session was live when this request loaded it, and is gone at its end.

        Retired by a parallel ``change_id`` (a login), ended by a logout or
        revoked: this request is stale. Nothing it wrote is stored, and its
        response leaves the cookie alone, which may name a newer session.
        """
        log.info('dropped the session changes of a request whose session ended or moved '
                 'to a new id while it ran')
        state.id = None
        return LEAVE_ALONE, None

    def _retired(self, state: SessionState) -> None:
        """The request presented an id that change_id retired less than rotation_grace ago.

        Typically a request that started before a login in the same browser
        and ends after it: its response must not replace the new cookie, or
        the user would be logged out; and the old id must not reach the new
        session. So nothing is stored and the cookie is left alone.
        """
        if state.dirty or state.pushes or state.invalidated or any(state.flags.values()):
            log.info('dropped the session changes of a request that presented an id retired '
                     'by change_id moments ago (rotation_grace)')

    def _degraded(self, state: SessionState, response: Response) -> None:
        # The store was down when the session was asked for; a logout still logs out.
        if (state.flags['expire'] or state.invalidated) and state.cookie_id is not None:
            self.store.remove(state.cookie_id)
            self.cookie.clear(response)

    def _set_cookie(self, plan: Plan, state: SessionState, response: Response,
                    refresh: datetime.datetime | None) -> None:
        if plan.cookie == CLEAR:
            self.cookie.clear(response)
        elif state.id is None:
            return
        elif plan.cookie == NEW_ID or self._resends(plan, state, refresh):
            self.cookie.set(response, state.id, self._max_age(state, plan.store != NOTHING))

    def _resends(self, plan: Plan, state: SessionState,
                 refresh: datetime.datetime | None) -> bool:
        """Whether a kept cookie is sent again: it slides (its own timeout set, or a
        persistent cookie refreshed), or an old secret signed it."""
        stores = plan.store != NOTHING
        return state.resign or (stores and (
            state.own_timeout_set
            or (refresh is not None and self._max_age(state, stores) is not None)))

    def _max_age(self, state: SessionState, stores: bool) -> float | None:
        """The cookie's Max-Age: a session with a timeout of its own ("remember me")
        has a persistent cookie that lives as long; any other, the factory's
        ``cookie_max_age``. A timeout this request set counts only if it is stored."""
        own = state.own_timeout
        if state.own_timeout_set and not stores:
            own = state.stored.timeout if state.stored is not None else None
        return own if own is not None else self.cookie.max_age

    def _finish_late(self, plan: Plan, state: SessionState, planned_id: str | None,
                     refresh: datetime.datetime | None, body_sent: bool = True) -> None:
        """Carry out the store action when a late_store body has ended."""
        if state.flags['expire'] or state.id != planned_id:
            # The session ended while the body streamed: the cookie can no
            # longer change, so nothing is stored, and the old document goes.
            if state.found and not plan.remove_loaded:
                self.accounts.remove_ended(state)
        elif body_sent:
            self._store(plan, state, refresh)
        else:
            log.warning('late_store: the response body raised; the session was not saved')

    def _store(self, plan: Plan, state: SessionState, refresh: datetime.datetime | None,
               now: datetime.datetime | None = None) -> Outcome | None:
        """Carry out ``plan``'s store action; return the plan and refresh for the cookie,
        or None when the store failed and ``degrade_on_outage`` serves the response anyway."""
        now = now or utcnow()   # late_store: the body has streamed since the plan
        try:
            if plan.store == INSERT:
                self.accounts.created(state, self._insert(state, now))
            elif plan.store == MOVE:
                if not self._move(state, now):
                    return self._gone(state)
            elif plan.store == UPDATE:
                if state.found:
                    if not self._update(state, now, refresh):
                        return self._gone(state)
                elif not self._update_unread(state, now):
                    return self._as_new(state, now)
        except SessionBackendError as exc:
            if not self.degrade_on_outage:
                raise
            log.warning('session not saved (degrade_on_outage): %s', exc)
            return None
        return plan, refresh

    def _expires(self, state: SessionState, now: datetime.datetime) -> datetime.datetime | None:
        return self.expiry.at(state.created_by(now), now, state.own_timeout)

    def _insert(self, state: SessionState, now: datetime.datetime,
                handle: str | None = None) -> dict[str, Any]:
        """Insert the session (new, or moving with its ``handle``); return its account fields."""
        assert state.id is not None
        state.fold_pushes()
        account = self.accounts.insert_fields(state, now, handle)
        self.store.insert(state.id, state.data, state.created_by(now), self._expires(state, now),
                          state.own_timeout, account=account)
        return account

    def _update(self, state: SessionState, now: datetime.datetime,
                refresh: datetime.datetime | None) -> bool:
        """Write a loaded session's changes, or refresh its expiry; False if it had gone."""
        assert state.id is not None and state.stored is not None
        changed, removed = state.delta()
        own_timeout = state.own_timeout if state.own_timeout_set else UNCHANGED
        if changed or removed or state.own_timeout_set:
            if not self.store.update(state.id, now, changed, removed,
                                     self._expires(state, now), state.stored.version,
                                     data=state.data, stored_size=state.stored.size,
                                     timeout=own_timeout,
                                     account=self.accounts.update_fields(state, now)):
                return False
            self.accounts.updated(state, changed, now)
        elif refresh is not None:
            return self.store.touch(state.id, now, refresh,
                                    account=self.accounts.update_fields(state, now))
        return True

    def _confirm(self, state: SessionState) -> bool:
        """Whether the session a request loaded is still live now that its cookie is to be
        signed anew: a parallel login may have retired it (one query by ``_id``)."""
        assert state.id is not None
        return self.store.is_live(state.id, utcnow())

    def _update_unread(self, state: SessionState, now: datetime.datetime) -> bool:
        """A write-only request: its changes in one update, without a find.

        Returns False when the session had gone (expired, removed), or is one
        a blind write cannot keep right: :meth:`_as_new` finds out which.
        """
        assert state.cookie_id is not None
        assigned = state.assigned()
        removed = {key for key in state.dirty if key not in state.data}
        if not (assigned or removed or state.pushes):
            return True
        if not self.store.update(state.cookie_id, now, assigned, removed,
                                 self.expiry.at(now, now), pushes=state.pushes,
                                 account=self.accounts.update_fields(state, now)):
            return False
        self.accounts.updated(state, assigned, now)
        return True

    def _as_new(self, state: SessionState, now: datetime.datetime) -> Outcome:
        """A write that did not read the session found nothing to write to: find out why.

        The id may have been retired by change_id moments ago (then nothing
        is stored, see :meth:`_retired`); the session may be one a blind
        write cannot keep right (a timeout of its own, values sealed with an
        older key, a size near the limit: it is written now, as after a
        read); or it has gone, and the writes start a new one.
        """
        state.reload()
        if state.retired:
            self._retired(state)
            return LEAVE_ALONE, None
        if state.found:
            refresh = self.expiry.refreshed(state.created_by(now), state.expires, now,
                                            state.own_timeout)
            if not self._update(state, now, None):
                return self._gone(state)
            return Plan(KEEP, UPDATE, False), refresh
        plan = decide(state.flags, False, False, bool(state.data or state.pushes),
                      state.had_cookie)
        if plan.store == INSERT:
            state.id = new_session_id()
            self.accounts.created(state, self._insert(state, now))
        else:
            state.id = None
        return plan, None

    def _move(self, state: SessionState, now: datetime.datetime) -> bool:
        """change_id: the session as this request leaves it, under a new id; the old one goes.

        The new document is written before the old one is deleted, so a failure
        in between loses nothing; the delete returns the old document as it is
        then, and another request's changes since the load are carried over. If
        it had gone (logged out, expired, moved, revoked), the new one is
        deleted and False returned: a stale request cannot bring it back.
        """
        store, old_id, stored = self.store, state.cookie_id, state.stored
        assert old_id is not None and stored is not None and state.id is not None
        account = self._insert(state, now, self.accounts.handle(state))
        try:
            latest = store.pop(old_id, now, stored.version, self.rotation_grace)
        except SessionConflict:
            store.remove(state.id)
            raise
        if latest is None:
            store.remove(state.id)
            return False
        if latest.version != stored.version:
            self._carry_over(state, latest.data, now)
        self.accounts.moved(state, stored.user, account)
        return True

    def _carry_over(self, state: SessionState, latest: dict[str, Any],
                    now: datetime.datetime) -> None:
        """Write to the moved session what another request changed since this one loaded it."""
        assert state.id is not None
        theirs, dropped = state.their_changes(latest)
        if theirs or dropped:
            self.store.update(state.id, now, theirs, dropped, self._expires(state, now),
                              data=dict(state.data, **theirs), stored_size=None)
