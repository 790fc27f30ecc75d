"""Sphinx directives that generate reference material from the code.

``.. mongosession-settings::``
    The configuration reference: one entry per row of the option tables
    (``pyramid_mongosession.options.CONNECTION`` and ``FACTORY``), with its
    type and its default from the row, an example and its meaning from here.
    The build fails when a setting has no description here, or a description
    has no setting, so the reference cannot drift from the code.

``.. pmongosession-help::``
    The ``--help`` output of the ``pmongosession`` command and each of its
    subcommands, as the installed code prints it.

Each setting is a ``setting`` object: ``:setting:`timeout``` links to it.
"""
import contextlib
import io
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# Defaults that are a behaviour rather than a value (the rest are the table's).
DEFAULT_NOTES = {
    'url': 'none: ``host`` and ``port`` are used',
    'db_name': 'the database the ``url`` names; ``pyramid_mongosession`` with '
               '``url = mongomock://``; required otherwise',
}

# group, example (ini lines without the prefix), meaning.
SETTINGS = {
    # -- where the sessions live
    'url': ('connection', 'url = mongodb://db1,db2,db3/myapp?replicaSet=rs0&w=majority', '''
        A MongoDB connection string. It may name the database (``/myapp``) and
        carry any client option (``?replicaSet=rs0&w=majority&readPreference=primary``;
        see :doc:`deployment`). ``mongomock://`` keeps sessions in the memory
        of each process, for development without a server (the ``embedded``
        extra), in the database ``pyramid_mongosession`` unless the url
        (``mongomock:///mydb``) or ``db_name`` names another. Cannot be
        combined with ``host``, ``port``, ``username`` or ``password``: put
        credentials into the url. The url is checked at
        start-up as pymongo reads it, without connecting: a misspelt scheme,
        a bad host or port, an unknown option or a bad option value stops the
        application with a ``ConfigurationError``. A ``mongodb+srv://`` url is
        checked without its DNS lookup, which happens on the first connection
        (with a pymongo older than 4.12, only its scheme is checked).'''),
    'host': ('connection', 'host = db.example.internal', '''
        The server's host name, as in the Perl modules; used when there is no
        ``url``.'''),
    'port': ('connection', 'port = 27018', '''
        The server's port; used when there is no ``url``.'''),
    'username': ('connection', 'username = sessions', '''
        User name to authenticate with ``host``/``port``.'''),
    'password': ('connection', 'password = %(SESSION_DB_PASSWORD)s', '''
        Password to authenticate with ``host``/``port``. Pass it from the
        environment with a pserve variable rather than writing it into the
        file.'''),
    'db_name': ('connection', 'db_name = myapp', '''
        The database holding the sessions collection.'''),
    'coll_name': ('connection', 'coll_name = web_sessions', '''
        The sessions collection. Several applications may share a database
        with a collection each.'''),
    # -- the cookie
    'secret': ('cookie', 'secret = %(SESSION_SECRET)s', '''
        Signs the session cookie (HMAC-SHA512 through WebOb's
        ``SignedCookieProfile``). Use a long random string, the same in every
        process and host of the application, and keep it out of version
        control. At least 32 bytes (UTF-8), or the application does not
        start; make one with ``python3 -c "import secrets;
        print(secrets.token_urlsafe(48))"``. Changing it makes every existing
        cookie invalid, unless the former secret is kept in ``old_secrets``
        for a while: see :ref:`rotation`.'''),
    'old_secrets': ('cookie', 'old_secrets = %(SESSION_SECRET_OLD)s', '''
        Former values of ``secret``, still accepted when a cookie is verified,
        so that the secret can change without logging anybody out. The
        current ``secret`` is tried first, then these in order: one HMAC
        each. A cookie that verifies only with one of them loads its session
        as usual, and the response sends it again, the same id signed with
        the current ``secret`` (no database write; not on a response that
        ``is_cacheable``). A secret shorter than 32 bytes, or the current
        one, here stops the application at start-up. In an ini file the list is separated by
        white space, so these secrets cannot contain any. Remove a secret
        once no live session can still be named by a cookie it signed: see
        :ref:`rotation`.'''),
    'cookie_name': ('cookie', 'cookie_name = myapp_session', '''
        The cookie's name; an RFC 6265 token.'''),
    'cookie_max_age': ('cookie', 'cookie_max_age = 2592000', '''
        The cookie's lifetime in seconds. ``none`` makes it a browser-session
        cookie, dropped when the browser closes. With a lifetime, the cookie is
        sent again whenever the stored expiry moves, so the browser's copy
        slides with it.'''),
    'cookie_path': ('cookie', 'cookie_path = /app', '''
        The cookie's ``Path``.'''),
    'cookie_domain': ('cookie', 'cookie_domain = .example.com', '''
        The cookie's ``Domain``; none: the host that set it, only.'''),
    'cookie_secure': ('cookie', 'cookie_secure = true', '''
        Send the cookie over HTTPS only. Turn it on in production.'''),
    'cookie_httponly': ('cookie', 'cookie_httponly = true', '''
        Hide the cookie from JavaScript.'''),
    'cookie_samesite': ('cookie', 'cookie_samesite = Strict', '''
        The cookie's ``SameSite`` attribute. ``None`` needs
        ``cookie_secure = true``; an empty value sends no attribute.'''),
    # -- expiry
    'timeout': ('expiry', 'timeout = 3600', '''
        Idle seconds before a session expires. Every write, and a read-only
        request when ``reissue_time`` allows, moves the expiry to now +
        ``timeout``. ``none`` disables the idle timeout (the session then
        lives until ``absolute_timeout``, ``expire`` or ``invalidate()``).
        Must be longer than ``reissue_time``, which is 120 seconds by default:
        a ``timeout`` of 120 or less needs a smaller ``reissue_time`` as well
        (``timeout = 60`` with ``reissue_time = 30``), or the application
        does not start. See :doc:`semantics`.'''),
    'reissue_time': ('expiry', 'reissue_time = 300', '''
        A request that only reads refreshes the stored expiry when that moves
        it by at least this many seconds, so read-only traffic costs at most
        one small write per window per session. Must be shorter than
        ``timeout``; ``0`` refreshes on every request. A session can therefore
        expire up to ``reissue_time`` seconds earlier than ``timeout`` after
        the last read-only request.'''),
    'absolute_timeout': ('expiry', 'absolute_timeout = 86400', '''
        Seconds after its creation when a session ends however active it is
        (OWASP's absolute timeout). ``change_id`` keeps the creation time.'''),
    # -- storage, concurrency and faults
    'detect_conflicts': ('storage', 'detect_conflicts = true', '''
        Raise :class:`~pyramid_mongosession.SessionConflict` when another
        request wrote the session after this request loaded it, instead of
        merging the two requests' changes key by key. See
        :doc:`concurrency`.'''),
    'operation_timeout': ('storage', 'operation_timeout = 2.5', '''
        The longest one database call may take, in seconds (pymongo's
        client-side operation timeout, covering server selection, retries and
        the wait for the answer). Past it the call raises
        :class:`~pyramid_mongosession.SessionBackendError`. ``none`` leaves
        pymongo's own limits (30 s of server selection, no socket timeout).'''),
    'rotation_grace': ('expiry', 'rotation_grace = 30', '''
        For this many seconds after ``change_id`` retires a session id, a
        request that presents the old id (one that started before the login,
        in another tab or as a parallel XHR) sees an empty session that is
        never stored, and its response neither sets nor clears the session
        cookie, so it cannot log the user out; its writes are dropped with an
        INFO log line. The old id never reaches the new session. ``0``
        deletes the old document at once, and such a request then starts a
        new session as for any unknown id. See :doc:`options`.'''),
    'outage_probe_interval': ('storage', 'outage_probe_interval = 10', '''
        Once a call finds MongoDB unreachable (connection refused, no server
        to select, no answer within ``operation_timeout``), calls fail at
        once with :class:`~pyramid_mongosession.SessionBackendError` for this
        many seconds instead of each waiting ``operation_timeout``; then one
        request at a time tries again, and the first that succeeds resumes
        normal service. So at most one request per interval pays the timeout,
        and a thread-pool server keeps its workers during an outage.'''),
    'max_size': ('storage', 'max_size = 65536', '''
        Refuse, with :class:`~pyramid_mongosession.SessionValueError` naming
        the largest key, to store a session whose data exceeds this many bytes
        of BSON. MongoDB's own limit is 16 MiB per document.'''),
    'degrade_on_outage': ('storage', 'degrade_on_outage = true', '''
        When MongoDB cannot be reached, serve an empty session that is not
        saved (with a logged warning) instead of raising
        :class:`~pyramid_mongosession.SessionBackendError`. Users appear
        logged out during the outage; their sessions are intact after it.'''),
    'is_cacheable': ('storage', 'is_cacheable = myapp.sessions:never_cacheable', '''
        ``f(request, response)`` returning true for responses a shared cache
        may store: those get no session cookie and cause no write. The
        default treats responses marked ``Cache-Control: public`` so. See
        :doc:`security`.'''),
    'encryption_keys': ('storage', 'encryption_keys = %(SESSION_KEY_NEW)s %(SESSION_KEY_OLD)s', '''
        Base64 AES-256 keys (32 random bytes each) that encrypt session values
        at rest; the first encrypts, all decrypt, so a new key goes first and
        an old one is dropped once the sessions it encrypted have expired.
        Needs the ``encryption`` extra. Encrypted values cannot be matched by
        ``revoke``; the user id of a session (``user_key``) is then indexed
        as a keyed hash, and what is recorded about its client encrypted. See
        :doc:`security` and :doc:`accounts`.'''),
    # -- users and their sessions
    'user_key': ('accounts', 'user_key = user_id', '''
        The session key whose value is the user id: ``auth.userid`` is where
        Pyramid's ``SessionAuthenticationHelper`` keeps it. Each write that
        changes this key also stores the value in the document's ``user``
        field, which a partial index covers with ``expires``, so that a
        user's sessions are listed and revoked with one indexed query
        (:meth:`~pyramid_mongosession.MongoSessionFactory.user_sessions`,
        ``revoke_session``, ``revoke_user``, ``pmongosession sessions``).
        Sessions without the key stay out of the index. ``none``: sessions
        belong to no user. See :doc:`accounts`.'''),
    'track_clients': ('accounts', 'track_clients = false', '''
        Record, when a session is created and at each ``change_id``, its
        User-Agent (the first 200 characters) and its client's network (the
        ``REMOTE_ADDR`` cut to its IPv4 /24 or IPv6 /48), which a user's list
        of sessions shows. ``false`` records neither. See :doc:`accounts`.'''),
    'max_sessions_per_user': ('accounts', 'max_sessions_per_user = 5', '''
        The most live sessions one user may have. When a session gets a user
        who then has more, that user's least recently seen sessions are
        revoked, also under concurrent logins. Costs each login (a write of
        ``user_key``) one query more, and a delete when over. ``none``: no
        limit. See :doc:`accounts`.'''),
}

GROUPS = [
    ('connection', 'Where the sessions live'),
    ('cookie', 'The cookie'),
    ('expiry', 'Expiry'),
    ('storage', 'Storage, concurrency and faults'),
    ('accounts', 'Users and their sessions'),
]


def _literal(text):
    return '``%s``' % text


def render_default(value):
    """A default value as the ini file would spell it."""
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return _literal('true' if value else 'false')
    if isinstance(value, float) and value.is_integer():
        return _literal(int(value))
    if isinstance(value, (int, float, str)):
        return _literal(value)
    if isinstance(value, (list, tuple)):
        return _literal(' '.join(str(item) for item in value))
    if callable(value):
        return ':func:`%s.%s`' % (value.__module__, value.__qualname__)
    raise ExtensionError('cannot render the default %r in the settings reference' % (value,))


def setting_rows():
    """``(name, group, type, default, example, meaning)`` for every setting, checked."""
    from pyramid_mongosession import options, settings

    table = dict(options.CONNECTION, **options.FACTORY)
    missing = sorted(set(table) - set(SETTINGS))
    unknown = sorted(set(SETTINGS) - set(table))
    if missing or unknown:
        raise ExtensionError(
            'the settings reference is out of date: %s%s (edit docs/_ext/mongosession_docs.py)'
            % ('undocumented settings: %s. ' % ', '.join(missing) if missing else '',
               'documented settings that do not exist: %s.' % ', '.join(unknown)
               if unknown else ''))
    rows = []
    for name, option in table.items():
        group, example, meaning = SETTINGS[name]
        if name in settings.REQUIRED:
            default = 'required'
        elif name in DEFAULT_NOTES:
            default = DEFAULT_NOTES[name]
        else:
            default = render_default(option.default)
        rows.append((name, group, option.convert.reference, default, example,
                     ' '.join(meaning.split())))
    return rows


class SettingsReference(SphinxDirective):
    """``.. mongosession-settings::``: the generated configuration reference."""

    has_content = False

    def run(self):
        from pyramid_mongosession.settings import PREFIX

        rows = setting_rows()
        lines = []
        for group, title in GROUPS:
            lines += [title, '-' * len(title), '']
            for name, row_group, kind, default, example, meaning in rows:
                if row_group != group:
                    continue
                lines += [
                    '.. setting:: %s' % name,
                    '',
                    '   :Type: %s' % kind,
                    '   :Default: %s' % default,
                    '   :Example: ``%s%s``' % (PREFIX, example),
                    '',
                    '   %s' % meaning,
                    '',
                ]
        lines += [
            'Client options', '-' * len('Client options'), '',
            '.. setting:: client.<option>', '',
            '   :Type: as pymongo expects for ``<option>``, checked at start-up',
            '   :Default: pymongo\'s',
            '   :Example: ``%sclient.serverSelectionTimeoutMS = 2000``' % PREFIX, '',
            '   Passed to :class:`pymongo.mongo_client.MongoClient` as the keyword argument '
            '``<option>`` (the Perl modules\' "prefix it with mongodb\\_" rule). Any '
            'option of a connection string works here too: ``client.w = majority``, '
            '``client.readPreference = primary``, ``client.retryWrites = false``, '
            '``client.tls = true``.', '',
        ]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source='<settings reference>'),
                                 container)
        return container.children


class CommandHelp(SphinxDirective):
    """``.. pmongosession-help::``: ``--help`` of the command and each subcommand."""

    has_content = False

    def run(self):
        from pyramid_mongosession import cli

        def help_of(*argv):
            out = io.StringIO()
            old = os.environ.get('COLUMNS')
            os.environ['COLUMNS'] = '78'
            try:
                with contextlib.redirect_stdout(out):
                    status = cli.main(list(argv) + ['--help'])
            finally:
                if old is None:
                    del os.environ['COLUMNS']
                else:
                    os.environ['COLUMNS'] = old
            if status != 0:
                raise ExtensionError('%s --help failed' % ' '.join(('pmongosession',) + argv))
            return out.getvalue().rstrip()

        result = []
        for argv in [()] + [(name,) for name in cli.COMMANDS]:
            title = ' '.join(('pmongosession',) + argv)
            section = nodes.section(ids=[nodes.make_id('help ' + title)])
            section += nodes.title(text=title)
            block = nodes.literal_block(text='$ %s --help\n%s' % (title, help_of(*argv)))
            block['language'] = 'text'
            section += block
            result.append(section)
        return result


def parse_setting(env, signature, signode):
    """Show a setting with its ``mongodb_session.`` prefix; link it by its short name."""
    from pyramid_mongosession.settings import PREFIX
    name = signature.strip()
    signode += addnodes.desc_name(PREFIX + name, PREFIX + name)
    return name


def setup(app):
    app.add_object_type('setting', 'setting', indextemplate='pair: %s; setting',
                        parse_node=parse_setting)
    app.add_directive('mongosession-settings', SettingsReference)
    app.add_directive('pmongosession-help', CommandHelp)
    return {'version': '1', 'parallel_read_safe': True, 'parallel_write_safe': True}
