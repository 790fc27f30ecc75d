"""When a session expires: its idle timeout, the refresh window, its absolute end."""
from __future__ import annotations

import datetime

_NO_TIME = datetime.timedelta(0)


class Expiry:
    """When a session expires: the factory's ``timeout`` (``idle``), ``reissue_time``
    (``reissue``) and ``absolute_timeout`` (``absolute``).

    All three are :class:`datetime.timedelta` or None (``reissue`` is never
    None). A session's own idle timeout (``options['timeout']``) is given to
    each call, in seconds, and replaces ``idle`` for it.
    """

    def __init__(self, idle: datetime.timedelta | None, reissue: datetime.timedelta,
                 absolute: datetime.timedelta | None) -> None:
        self.idle = idle
        self.reissue = reissue
        self.absolute = absolute

    def at(self, created: datetime.datetime, now: datetime.datetime,
           own_timeout: float | None = None) -> datetime.datetime | None:
        """When a session created at ``created`` and active ``now`` expires (or None)."""
        if own_timeout is not None:
            idle_end: datetime.datetime | None = now + datetime.timedelta(seconds=own_timeout)
        elif self.idle is not None:
            idle_end = now + self.idle
        else:
            idle_end = None
        if self.absolute is None:
            return idle_end
        absolute_end = created + self.absolute
        return absolute_end if idle_end is None else min(idle_end, absolute_end)

    def refreshed(self, created: datetime.datetime, stored: datetime.datetime | None,
                  now: datetime.datetime, own_timeout: float | None = None
                  ) -> datetime.datetime | None:
        """The new expiry for a request that changed nothing, or None when no refresh is due.

        A refresh is due when it moves the stored expiry forward by at least
        ``reissue_time``, so read-only traffic costs at most one write per window.
        A session with a timeout of its own shorter than ten ``reissue_time``
        is refreshed once per tenth of its timeout instead, so that it stays
        an idle timeout: a session read more often than that never expires.
        """
        if self.idle is None and own_timeout is None:
            return None
        expires = self.at(created, now, own_timeout)
        if stored is None or expires is None:
            return expires
        window = self.reissue
        if own_timeout is not None:
            window = min(window, datetime.timedelta(seconds=own_timeout) / 10)
        gain = expires - stored
        if gain > _NO_TIME and gain >= window:
            return expires
        return None
