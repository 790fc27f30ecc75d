"""The tween that ends the session above the exception views, so a failure to store
can still become the application's error page."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .exceptions import SessionStoreError

if TYPE_CHECKING:
    from pyramid.registry import Registry
    from pyramid.request import Request
    from pyramid.response import Response

#: Where a request keeps the end of its session until the tween or the response callback runs it.
FINISH = 'pyramid_mongosession.finish'


def session_tween_factory(handler: Callable[[Request], Response],
                          registry: Registry) -> Callable[[Request], Response]:
    """A tween that ends the session where a failure can still become an error page.

    Pyramid runs response callbacks after the exception views, so a session
    that fails to store there gives the WSGI server's bare 500. Installed
    over ``EXCVIEW`` (``config.include('pyramid_mongosession')`` does it),
    this tween ends the session first; a
    :class:`~pyramid_mongosession.SessionStoreError` then renders the
    application's exception view for it (a 503 page, say). Under
    ``pyramid_retry``, a retryable error rendered that way still retries
    the request. Without an exception view for the error, it propagates as
    before.
    """
    def session_tween(request: Request) -> Response:
        response = handler(request)
        finish = request.__dict__.get(FINISH)
        if finish is None:
            return response
        try:
            finish(request, response)
        except SessionStoreError:
            return request.invoke_exception_view(reraise=True)
        return response
    return session_tween
