"""Every option of a session factory, once: how an ini file spells it, its default, its check.

One table, :data:`FACTORY`, of :class:`Option` rows, read by all who need
an option's facts: :class:`~pyramid_mongosession.MongoSessionFactory`
checks what it is given with :func:`checked` (defaults filled in, each value
checked, then the rules between options), the ini parser
(:mod:`pyramid_mongosession.settings`) converts ``mongodb_session.*`` text
with each row's :class:`Converter`, and the configuration reference is
generated from the same rows. :data:`CONNECTION` holds the settings of where
the sessions live, which only the ini parser reads.
"""
from __future__ import annotations

import datetime
from typing import Any, Callable, Mapping, NamedTuple

from pyramid.path import DottedNameResolver
from pyramid.settings import aslist, falsey, truthy

from .encoding import MAX_SECONDS, is_duration
from .lifecycle import publicly_cacheable


class Converter:
    """How a setting's value is read: an ini string (or any value from code) in, the
    option's value out, :exc:`ValueError` or :exc:`TypeError` when it does not convert.

    ``expected`` says, for an error, what the value should have been (None:
    the converter's own message says it); ``reference`` is its type in the
    configuration reference.
    """

    __slots__ = ('convert', 'expected', 'reference')

    def __init__(self, convert: Callable[[Any], Any], expected: str | None,
                 reference: str) -> None:
        self.convert = convert
        self.expected = expected
        self.reference = reference

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


def _none_if_empty(value: Any) -> bool:
    return value is None or str(value).strip().lower() in ('', 'none')


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in truthy:
        return True
    if text in falsey:
        return False
    raise ValueError('expected true or false')


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError('expected an integer')
    return int(value)


def _dotted(value: Any) -> Callable[..., Any]:
    if callable(value):
        return value   # type: ignore[no-any-return]
    try:
        resolved: Callable[..., Any] = DottedNameResolver().resolve(str(value).strip())
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    if not callable(resolved):
        raise ValueError('%r is not callable' % value)
    return resolved


def _list_or_none(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return None if value.strip().lower() == 'none' else aslist(value) or None
    return list(value or ()) or None


def _samesite(value: Any) -> str | None:
    # 'None' is a SameSite value here, not "no attribute": an empty value omits it.
    text = str(value).strip()
    return text.capitalize() if text else None


TEXT = Converter(str, None, 'string, used exactly as written')
STRING = Converter(lambda value: str(value).strip(), None, 'string')
STRING_OR_NONE = Converter(
    lambda value: None if _none_if_empty(value) else str(value).strip(), None,
    'string, or ``none``')
BOOL = Converter(_bool, 'true or false',
                 'boolean: ``true`` or ``false`` (also ``yes``/``no``, ``on``/``off``, '
                 '``1``/``0``)')
INT = Converter(_int, 'an integer', 'integer')
INT_OR_NONE = Converter(lambda value: None if _none_if_empty(value) else _int(value),
                        'an integer, or none', 'integer, or ``none``')
FLOAT = Converter(float, 'a number', 'number')
FLOAT_OR_NONE = Converter(lambda value: None if _none_if_empty(value) else float(value),
                          'a number, or none', 'number, or ``none``')
DOTTED = Converter(_dotted, 'the dotted name of a callable (package.module.function)',
                   'dotted name of a Python callable (``package.module.function`` '
                   'or ``package.module:function``)')
LIST_OR_NONE = Converter(_list_or_none, None, 'white-space separated list, or ``none``')
SAMESITE = Converter(_samesite, None,
                     '``Strict``, ``Lax`` or ``None`` (any case); empty for no attribute')


class OptionError(ValueError):
    """An option's value the factory refuses. ``template`` names options as
    ``{name}``: :meth:`spelled` writes them as a caller spells them (an ini
    file, with its prefix); ``str()`` gives them bare, as Python code spells them."""

    def __init__(self, template: str, **values: Any) -> None:
        self.template = template
        self.values = values
        super().__init__(self.spelled(''))

    def spelled(self, prefix: str) -> str:
        names = {name: prefix + name for name in _NAMES}
        return self.template.format(**dict(names, **self.values))


#: ``check(value)``: raises :class:`OptionError` (or :exc:`TypeError`) for a bad value.
Check = Callable[[Any], None]


def duration(name: str, allow_zero: bool = False, optional: bool = True) -> Check:
    """A check of a number of seconds (None too, if ``optional``)."""
    def check(value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError('{%s} must be a number of seconds%s, not {value!r}'
                              % (name, ' or None' if optional else
                                 ' (0 refreshes every request)' if allow_zero else ''),
                              value=value)
        if not is_duration(value, allow_zero):
            raise OptionError('{%s} must be a positive, finite number of seconds up to %d '
                              '(about a century), or None, not {value!r}'
                              % (name, MAX_SECONDS), value=value)
    return check


def positive_int(name: str, unit: str) -> Check:
    """A check of a positive integer (or None)."""
    def check(value: Any) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise OptionError('{%s} must be a positive %s or None, not {value!r}'
                              % (name, unit), value=value)
    return check


def kind(name: str, types: type | tuple[type, ...], what: str) -> Check:
    """A check of a value's type (None passes)."""
    def check(value: Any) -> None:
        if value is not None and not isinstance(value, types):
            raise TypeError('%s must be %s or None' % (name, what))
    return check


def _callable_or_none(value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError('importer must be a callable taking the request, or None')


class Option(NamedTuple):
    """One option: its name, its converter, its default, its check, and a gloss
    (a few words on what it is, for suggestions; None when its name says it)."""

    name: str
    convert: Converter
    default: Any
    check: Check | None = None
    gloss: str | None = None


#: Where the sessions live: the settings of the ini file only (the factory takes a
#: collection). ``url`` and ``host``/``port`` are alternatives.
CONNECTION = {option.name: option for option in (
    Option('url', STRING, None, gloss='the MongoDB connection string'),
    Option('host', STRING, 'localhost'),
    Option('port', INT, 27017),
    Option('username', STRING, None, gloss='with host and port'),
    Option('password', TEXT, None),
    Option('db_name', STRING, None, gloss='the database'),
    Option('coll_name', STRING, 'sessions', gloss='the collection'),
)}

#: The options of :class:`~pyramid_mongosession.MongoSessionFactory` (``secret``,
#: required, is its second argument; the others are keyword options).
FACTORY = {option.name: option for option in (
    Option('secret', TEXT, None, gloss='signs the cookie'),
    Option('old_secrets', LIST_OR_NONE, None, gloss='former secrets, still accepted'),
    Option('cookie_name', STRING, 'session', gloss='the cookie\'s name'),
    Option('cookie_max_age', INT_OR_NONE, None, duration('cookie_max_age'),
           gloss='the cookie\'s lifetime in seconds'),
    Option('cookie_path', STRING, '/', gloss='the cookie\'s Path'),
    Option('cookie_domain', STRING_OR_NONE, None, gloss='the cookie\'s Domain'),
    Option('cookie_secure', BOOL, False, gloss='send the cookie over HTTPS only'),
    Option('cookie_httponly', BOOL, True, gloss='hide the cookie from JavaScript'),
    Option('cookie_samesite', SAMESITE, 'Lax', gloss='the cookie\'s SameSite attribute'),
    Option('timeout', INT_OR_NONE, 1200, duration('timeout'),
           gloss='idle seconds before a session expires'),
    Option('reissue_time', INT, 120, duration('reissue_time', allow_zero=True, optional=False)),
    Option('absolute_timeout', INT_OR_NONE, None, duration('absolute_timeout'),
           gloss='seconds from creation to the end of a session'),
    Option('detect_conflicts', BOOL, False),
    Option('operation_timeout', FLOAT_OR_NONE, 5.0, duration('operation_timeout'),
           gloss='the longest one wait of a database call may take'),
    Option('outage_probe_interval', FLOAT, 5.0,
           duration('outage_probe_interval', allow_zero=True, optional=False)),
    Option('rotation_grace', INT, 60, duration('rotation_grace', allow_zero=True)),
    Option('max_size', INT_OR_NONE, None, positive_int('max_size', 'number of bytes')),
    Option('degrade_on_outage', BOOL, False),
    Option('is_cacheable', DOTTED, publicly_cacheable),
    Option('encryption_keys', LIST_OR_NONE, None, gloss='encrypt values at rest'),
    Option('user_key', STRING_OR_NONE, 'auth.userid',
           kind('user_key', str, 'a session key (a string)'),
           gloss='the session key of the user id'),
    Option('track_clients', BOOL, True),
    Option('max_sessions_per_user', INT_OR_NONE, None,
           positive_int('max_sessions_per_user', 'integer')),
)}
#: Options given in code only (no ini setting of their own: ``import.*`` builds them).
CODE_ONLY = {option.name: option for option in (
    Option('importer', DOTTED, None, _callable_or_none),
    Option('import_until', STRING, None,
           kind('import_until', datetime.datetime, 'a datetime')),
)}
_NAMES = tuple(CONNECTION) + tuple(FACTORY) + tuple(CODE_ONLY)


def defaults() -> dict[str, Any]:
    """The default of every keyword option of the factory."""
    return {name: option.default for name, option in dict(FACTORY, **CODE_ONLY).items()
            if name != 'secret'}


def checked(given: Mapping[str, Any]) -> dict[str, Any]:
    """The factory's keyword options: ``given`` with the defaults, every value checked.

    An unknown option raises :exc:`TypeError`; a bad value
    :class:`OptionError` (a :exc:`ValueError`) or :exc:`TypeError`, naming it.
    """
    options = defaults()
    unknown = set(given) - set(options)
    if unknown:
        raise TypeError('unknown option(s): %s' % ', '.join(sorted(unknown)))
    options.update(given)
    for name, option in dict(FACTORY, **CODE_ONLY).items():
        if option.check is not None and name in options:
            option.check(options[name])
    timeout, reissue = options['timeout'], options['reissue_time']
    if timeout is not None and reissue >= timeout:
        def said(name: str) -> str:
            value = options[name]
            return '%s second%s%s' % (value, '' if value == 1 else 's',
                                      '' if name in given else ', the default')
        raise OptionError(
            '{reissue_time} (%s) must be shorter than {timeout} (%s): set {reissue_time} '
            'below %s, or a longer {timeout}' % (said('reissue_time'), said('timeout'), timeout))
    return options


def seconds(value: float | None) -> datetime.timedelta | None:
    """A checked number of seconds as a :class:`datetime.timedelta` (None stays None)."""
    return None if value is None else datetime.timedelta(seconds=value)
