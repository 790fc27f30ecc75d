"""The errors this package raises.

Every error is a :class:`SessionStoreError`, so one ``except`` clause (or one
exception view) covers them all; the subclasses say why the store refused.
The pymongo error behind a failure is chained as ``__cause__``.
"""
from zope.interface import classImplements


class SessionStoreError(Exception):
    """The session could not be loaded or stored.

    Raised for every failure to *store*; a failure to *remove* a session only
    logs a warning, as in Plack::Session::Store::MongoDB.
    """


class SessionBackendError(SessionStoreError):
    """MongoDB could not be reached, timed out, or refused the operation.

    Usually transient: map it to ``503 Service Unavailable``.
    """


class SessionConflict(SessionStoreError):
    """Another request wrote this session after this request loaded it.

    Raised only when ``detect_conflicts`` is on; by default concurrent writes
    to different keys merge and the last writer of a key wins. Where
    ``pyramid_retry`` is installed, it is a retryable error: the request is
    replayed, and sees the other request's write.
    """


try:
    from pyramid_retry import IRetryableError
except ImportError:  # without pyramid_retry, nothing retries
    pass
else:
    classImplements(SessionConflict, IRetryableError)


class SessionValueError(SessionStoreError, ValueError):
    """A session key or value that MongoDB cannot store.

    The message names the offending key. This is a programming error, not an
    outage: do not map it to a retry.
    """


class NoSuchSession(SessionStoreError, ValueError):
    """A handle that names none of the user's live sessions.

    Raised by :meth:`~pyramid_mongosession.MongoSessionFactory.revoke_user`
    when ``keep`` is not the handle of one of that user's live sessions (a
    typo, another user's session, one that has ended): nothing is revoked,
    since revoking "all but" a session that is not there would end them all.
    A programming or usage error, not an outage.
    """
