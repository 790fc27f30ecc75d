"""Server-side Pyramid sessions kept in MongoDB.

``config.include('pyramid_mongosession')`` reads the ``mongodb_session.*``
settings and installs the session factory; code-only applications build a
:class:`MongoSessionFactory` themselves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyramid.tweens import EXCVIEW

from .accounts import get_session_factory
from .events import (
    SessionCreated, SessionEnded, SessionExpired, SessionIdChanged, SessionImported)
from .exceptions import (
    NoSuchSession,
    SessionBackendError,
    SessionConflict,
    SessionStoreError,
    SessionValueError,
)
from .factory import MongoSessionFactory
from .settings import session_factory_from_settings

if TYPE_CHECKING:
    from pyramid.config import Configurator

__all__ = [
    'MongoSessionFactory',
    'NoSuchSession',
    'SessionBackendError',
    'SessionConflict',
    'SessionCreated',
    'SessionEnded',
    'SessionExpired',
    'SessionIdChanged',
    'SessionImported',
    'SessionStoreError',
    'SessionValueError',
    'get_session_factory',
    'includeme',
    'session_factory_from_settings',
]


def includeme(config: Configurator) -> None:
    """Install the session factory described by the ``mongodb_session.*`` settings.

    Also installs :func:`~pyramid_mongosession.tween.session_tween_factory`,
    so that a session that cannot be stored renders the application's
    exception view for the error.
    """
    config.set_session_factory(session_factory_from_settings(config.get_settings()))
    config.add_tween('pyramid_mongosession.tween.session_tween_factory', over=EXCVIEW)
