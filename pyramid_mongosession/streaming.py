"""A late_store body: the end of the session waits until the WSGI server closes it."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from .state import SessionState

#: ``finish(body_sent)``: what runs once the body has ended.
Finish = Callable[[bool], None]


def keeping_request(state: SessionState, finish: Finish) -> Finish:
    """``finish(body_sent)``, with ``state`` holding its request strongly until then.

    The state holds its request by a weak reference; under ``late_store`` the
    body ends after the request may be done with, and the end of the session
    still needs it (the client it records, the events it publishes).
    """
    request = state.request() if state.request is not None else None
    state.request = lambda: request

    def finish_then_let_go(body_sent: bool = True) -> None:
        # Reaches the request through the state only: once let go, nothing
        # that the response keeps (its body) holds the request any more.
        try:
            finish(body_sent)
        finally:
            kept = state.request() if state.request is not None else None
            state.request = weakref.ref(kept) if kept is not None else None
    return finish_then_let_go


class BodyThenFinish:
    """Wraps a WSGI ``app_iter``; calls ``finish(body_sent)`` once the body has ended.

    The body ends when the WSGI server closes it: sent completely, cut short
    (a Range request, a client that went away), or never iterated at all
    (HEAD, 304). Only a body that raised counts as not sent. The wrapper is
    its own iterator, because WebOb's replacements for HEAD, 304 and Range
    responses close the iterator they were given, not the iterable.
    """

    def __init__(self, app_iter: Iterable[bytes], finish: Finish) -> None:
        self._app_iter = app_iter
        self._iterator: Iterator[bytes] | None = None
        self._finish = finish
        self._raised = False
        self._closed = False

    def __iter__(self) -> BodyThenFinish:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._app_iter)
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException:
            self._raised = True
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close: Any = getattr(self._app_iter, 'close', None)
            if close is not None:
                close()
        except BaseException:
            self._raised = True
            raise
        finally:
            self._finish(not self._raised)
