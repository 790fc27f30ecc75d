"""Reading an application's ini file the way ``pserve`` does, placeholders and all."""
from __future__ import annotations

import configparser
import secrets
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from pyramid.exceptions import ConfigurationError

from ..crypto import new_key
from ..settings import EMBEDDED_SCHEME, PREFIX, session_factory_from_settings
from .base import PROG, UsageError

if TYPE_CHECKING:
    from ..factory import MongoSessionFactory

# -- reading the ini file ------------------------------------------------------

#: Settings maintenance does without, and the stand-in each gets: no command
#: signs a cookie, and only the commands about users (:data:`NEED_KEYS`,
#: ``revoke --user``) hash a user id or decrypt a value; the others only need
#: to know that values are encrypted. So their ``%(NAME)s`` variables need no
#: value here, unless the command needs them.
STAND_INS: dict[str, Callable[[], str]] = {
    PREFIX + 'secret': lambda: secrets.token_urlsafe(32),
    PREFIX + 'encryption_keys': new_key,
    PREFIX + 'import.secret': lambda: secrets.token_urlsafe(32),
}


def _missing_variable(exc: BaseException) -> str | None:
    """The ini variable whose absence ``exc`` reports, or None."""
    if isinstance(exc, configparser.InterpolationMissingOptionError):
        return exc.reference                      # %(NAME)s
    if type(exc) is KeyError and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]                        # get setting = NAME
    return None


def _load_error(config_uri: str, exc: BaseException) -> UsageError:
    if isinstance(exc, FileNotFoundError):
        return UsageError('cannot read %s: %s' % (exc.filename or config_uri,
                                                  exc.strerror or exc))
    message = ' '.join(str(exc).split())  # configparser's messages span lines
    if isinstance(exc, ImportError):   # use = egg:... or call:... that is not installed
        return UsageError(
            'cannot load %s: its application cannot be imported (%s): install the '
            'application in the environment that runs %s (pip install -e . in its '
            'project), or run the %s of the environment that serves it'
            % (config_uri, message, PROG, PROG))
    return UsageError('cannot load %s: %s' % (config_uri, message))


def _read_with_placeholders(config_uri: str, app_name: str | None,
                            given: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings, read with a placeholder for each variable the file uses but nobody gave."""
    from pyramid.paster import get_appsettings
    placeholders: dict[str, str] = {}
    first_error: BaseException | None = None
    while True:
        try:
            settings = get_appsettings(config_uri, name=app_name,
                                       options=dict(given, **placeholders))
            return dict(settings), placeholders
        except (LookupError, ValueError, ImportError, configparser.Error, OSError) as exc:
            name = _missing_variable(exc)
            if name is None:   # another error, found once the variables have values
                raise _load_error(config_uri, exc) from None
            if name in given or name in placeholders:
                raise _load_error(config_uri, first_error or exc) from None
            first_error = first_error or exc
            placeholders[name] = '<no value for %s: %s>' % (name, secrets.token_hex(8))


def _without_placeholders(settings: dict[str, Any], key: str, missing: list[str],
                          needs: Iterable[str], needed: dict[str, list[str]]) -> None:
    """A setting that holds a placeholder: a stand-in, dropped, or noted as ``needed``."""
    if key in STAND_INS and key not in needs:
        settings[key] = STAND_INS[key]()
    elif key.startswith(PREFIX):
        for name in missing:
            needed.setdefault(name, []).append(key)
    else:
        del settings[key]


def load_settings(config_uri: str, app_name: str | None = None,
                  variables: Iterable[tuple[str, str]] | None = None,
                  needs: Iterable[str] = ()) -> dict[str, Any]:
    """The settings of the ini file's application section, as ``pserve`` reads them.

    A variable that the file uses (``%(NAME)s``, ``get setting = NAME``) but
    that has no value is an error only where maintenance needs it: the file
    is read again with a placeholder for each such variable; the settings
    that end up holding one are dropped, or get a stand-in if maintenance
    does without them (:data:`STAND_INS`, unless the command ``needs`` them),
    and any other ``mongodb_session.*`` setting holding one is reported with
    the variables it needs.
    """
    settings, placeholders = _read_with_placeholders(config_uri, app_name, dict(variables or ()))
    needed: dict[str, list[str]] = {}   # variable -> the settings that use it
    for key, value in list(settings.items()):
        missing = [name for name, placeholder in placeholders.items()
                   if isinstance(value, str) and placeholder in value]
        if key in placeholders:       # the placeholder itself, as a global setting
            del settings[key]
        elif missing:
            _without_placeholders(settings, key, missing, needs, needed)
    if needed:
        raise UsageError('cannot load %s: no value for %s: give %s' % (
            config_uri,
            ', '.join('%s (used by %s)' % (name, ', '.join(keys)) for name, keys in needed.items()),
            ' '.join('--var %s=VALUE' % name for name in needed)))
    return settings


def factory_from_settings(settings: Mapping[str, Any],
                          operation_timeout: float | None = None) -> MongoSessionFactory:
    """The session factory described by ``settings`` (no connection is made yet).

    The secret is never used: a stand-in replaces it, so a file without one,
    such as an administrator's for ``ensure-indexes``, does as well.
    """
    settings = dict(settings)
    url = str(settings.get(PREFIX + 'url', '')).strip()
    if url.startswith(EMBEDDED_SCHEME):
        raise UsageError(
            '%surl = %s keeps sessions in the memory of each application process: '
            'there is no database for %s to work on' % (PREFIX, EMBEDDED_SCHEME, PROG))
    settings[PREFIX + 'secret'] = STAND_INS[PREFIX + 'secret']()
    if operation_timeout is not None:
        settings[PREFIX + 'operation_timeout'] = str(operation_timeout)
    try:
        return session_factory_from_settings(settings)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
