"""Plack::Middleware::Session's per-request options, and the end of a request.

A view steers what happens to its session through ``request.session.options``:

=============  ================================================================
``change_id``  Store the session under a new id and delete the old document
               (after login: the defence against session fixation).
``expire``     Delete the session's document and clear the cookie. Wins over
               everything, including data stored later in the request.
``no_store``   Write nothing that this request changed. ``expire`` and
               ``change_id`` win over it, as both must update the store.
``late_store`` Write after the response body has been sent (when the WSGI
               ``app_iter`` is closed), for streaming responses that change
               the session while they stream.
``id``         The session id, None while the session has none. Read-only.
=============  ================================================================

:func:`finish_session` is the one place that decides, at the end of the
request, what is written to MongoDB and what the cookie says. The factory
registers it as a response callback, so responses made by exception views
follow the same rules.
"""
from collections.abc import MutableMapping
import datetime
import logging

from .cookie import new_session_id
from .exceptions import SessionBackendError, SessionConflict

log = logging.getLogger(__name__)

FLAGS = ('change_id', 'expire', 'no_store', 'late_store')


class SessionOptions(MutableMapping):
    """``request.session.options``: Plack's per-request controls."""

    def __init__(self, session):
        self._session = session
        self._flags = dict.fromkeys(FLAGS, False)

    def __getitem__(self, key):
        if key == 'id':
            return self._session.id
        return self._flags[key]

    def __setitem__(self, key, value):
        if key == 'id':
            raise TypeError("options['id'] is read-only: set options['change_id'] "
                            "to give the session a new id")
        if key not in self._flags:
            raise KeyError('unknown session option %r (known: %s)' % (key, ', '.join(FLAGS)))
        self._flags[key] = bool(value)

    def __delitem__(self, key):
        self[key] = False

    def clear(self):
        for flag in FLAGS:
            self._flags[flag] = False

    def popitem(self):
        raise KeyError('session options keep their keys: set them to False instead')

    def __iter__(self):
        return iter(FLAGS + ('id',))

    def __len__(self):
        return len(FLAGS) + 1

    def __repr__(self):
        return repr(dict(self))


def utcnow():
    """Now, as the naive UTC datetime that BSON stores."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def publicly_cacheable(request, response):
    """The default ``is_cacheable`` check: ``Cache-Control: public`` responses.

    A shared cache would hand such a response, session cookie included, to
    other users; so it gets no session cookie, and nothing is written.
    """
    return bool(response.cache_control.public)


def finish_session(session, request, response):
    """Decide about the store and the cookie; write now, or when the body is sent."""
    options = session.options
    factory = session.factory
    cookie = factory.cookie
    if session.degraded:
        # The store was down when the session was asked for; a logout still logs out.
        if options['expire'] or session.invalidated:
            factory.store.remove(session.cookie_id)
            cookie.clear(response)
        return
    if (session.loaded_id is None and session.id is None and not session.had_cookie
            and not len(session) and not options['late_store']):
        return  # a new session that stayed empty: no cookie, no write
    if factory.is_cacheable(request, response):
        log.debug('left the session alone on a publicly cacheable response to %s', request.path)
        return
    old_id = session.loaded_id

    if options['expire']:
        if old_id is not None:
            factory.store.remove(old_id)
        if session.had_cookie or old_id is not None:
            cookie.clear(response)
        session.id = None
        return

    late, no_store = options['late_store'], options['no_store']
    carried = options['change_id'] and session.id is not None
    if options['change_id']:
        # The data moves to a new id, even under no_store (Plack's documented precedence).
        needs_new_id = carried or late or len(session)
    else:
        # A new (or invalidated) session gets its first id when it has something to store.
        needs_new_id = session.id is None and not no_store and (late or len(session))
    target_id = new_session_id() if needs_new_id else session.id
    refresh = None
    if target_id is not None and target_id == old_id and not no_store:
        refresh = factory.refreshed_expiry(session)

    if target_id is not None and target_id != old_id:
        cookie.set(response, target_id)
    elif target_id is None and (session.had_cookie or old_id is not None):
        cookie.clear(response)
    elif refresh is not None and cookie.max_age is not None:
        cookie.set(response, target_id)   # the browser's copy slides with the stored expiry
    session.id = target_id

    def write():
        try:
            _write(session, old_id, target_id, carried, refresh)
        except SessionBackendError as exc:
            if not factory.degrade_on_outage:
                raise
            log.warning('session not saved (degrade_on_outage): %s', exc)

    if late:
        length = response.content_length   # WebOb forgets it when app_iter changes
        response.app_iter = _CloseHook(response.app_iter, write)
        response.content_length = length
    else:
        write()


def _write(session, old_id, target_id, carried, refresh):
    """Carry out what :func:`finish_session` decided, as the session now is."""
    store = session.factory.store
    options = session.options
    if options['expire'] or session.id != target_id:
        # Expired or invalidated after the headers were sent (late_store): the
        # cookie can no longer change, so nothing is stored; the old id goes.
        if old_id is not None:
            store.remove(old_id)
        return
    if carried:
        _move(session, old_id, target_id)
    elif target_id != old_id:
        if old_id is not None:
            store.remove(old_id)   # invalidated: the old session goes, a new one starts
        if target_id is not None and len(session) and not options['no_store']:
            _insert(session, target_id)
    elif not options['no_store']:
        _update(session, target_id, refresh)


def _insert(session, target_id):
    factory = session.factory
    created = session.created_at
    factory.store.insert(target_id, session.data, created, factory.expiry(created, utcnow()))


def _update(session, target_id, refresh):
    factory = session.factory
    now = utcnow()
    changed, removed = session.changes()
    if changed or removed:
        factory.store.check_size(session.data)
        factory.store.update(target_id, now, changed, removed,
                             factory.expiry(session.created_at, now), session.version)
    elif refresh is not None:
        factory.store.touch(target_id, now, refresh)


def _move(session, old_id, target_id):
    """change_id: the session as this request leaves it, under a new id; the old one goes.

    The new document is written before the old one is deleted, so a failure
    in between loses nothing. Deleting returns the old document as it was at
    that moment: if another request wrote it since this one loaded it, its
    changes to keys this request did not change are carried over too. If the
    old document was already gone (logged out, moved by another request),
    the new one is deleted: a stale request cannot bring a session back.
    """
    store = session.factory.store
    _insert(session, target_id)
    try:
        latest = store.take(old_id, session.version)
    except SessionConflict:
        store.remove(target_id)
        raise
    if latest is None:
        store.remove(target_id)
        return
    if latest.version != session.version:
        changed, removed = session.changes()
        theirs = {key: value for key, value in latest.data.items()
                  if key not in changed and key not in removed and session.data.get(key) != value}
        dropped = [key for key in session.data if key not in latest.data and key not in changed]
        if theirs or dropped:
            now = utcnow()
            store.update(target_id, now, theirs, dropped,
                         session.factory.expiry(session.created_at, now))


class _CloseHook:
    """Wraps a WSGI ``app_iter`` to run ``callback`` once the body has been sent.

    If the body was not sent completely (the stream raised, the client went
    away), the callback does not run: the session keeps its state from before.
    """

    def __init__(self, app_iter, callback):
        self._app_iter = app_iter
        self._callback = callback
        self._complete = False

    def __iter__(self):
        yield from self._app_iter
        self._complete = True

    def close(self):
        try:
            close = getattr(self._app_iter, 'close', None)
            if close is not None:
                close()
        finally:
            if self._complete:
                self._callback()
            else:
                log.warning('late_store: the response body was not sent completely; '
                            'the session was not saved')
