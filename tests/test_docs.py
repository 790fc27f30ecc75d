"""The documentation builds without a warning and matches the code.

``sphinx-build -W`` runs as part of the test suite, so a docstring or page
that breaks the build fails the tests. The configuration reference and the
``pmongosession`` help are generated from the code while building (see
``docs/_ext/mongosession_docs.py``); the tests below check that the generated
pages really cover every setting and every public name.
"""
import html
import importlib.util
import inspect
import os
import re
import subprocess
import sys

import pytest

import pyramid_mongosession
from pyramid_mongosession import plan, settings
from pyramid_mongosession import options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, 'docs')


def need_sphinx():
    if importlib.util.find_spec('sphinx') is None:
        message = 'Sphinx is not installed: pip install -e ".[docs]"'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Build the HTML documentation once, warnings as errors; return the output directory."""
    need_sphinx()
    out = tmp_path_factory.mktemp('docs')
    html_dir, doctrees = out / 'html', out / 'doctrees'
    done = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-E', '-q', '-b', 'html',
         '-d', str(doctrees), DOCS, str(html_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    return done, html_dir


def page_text(html_dir, name):
    with open(os.path.join(html_dir, name + '.html'), encoding='utf-8') as f:
        return f.read()


def plain(markup):
    return html.unescape(re.sub(r'\s+', ' ', re.sub(r'<[^>]+>', ' ', markup)))


def test_sphinx_build_has_no_warnings(built):
    done, html_dir = built
    assert done.returncode == 0, 'sphinx-build -W failed:\n' + done.stdout + done.stderr
    assert (html_dir / 'index.html').exists()


def extension():
    spec = importlib.util.spec_from_file_location(
        'mongosession_docs', os.path.join(DOCS, '_ext', 'mongosession_docs.py'))
    module = importlib.util.module_from_spec(spec)
    need_sphinx()
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_lists_every_setting_with_its_default(built):
    done, html_dir = built
    assert done.returncode == 0, done.stdout + done.stderr
    page = page_text(html_dir, 'configuration')
    render = extension().render_default
    names = list(options.CONNECTION) + list(options.FACTORY)
    assert names, 'no settings found'
    # One entry per setting, from its anchor to the next one.
    entries = dict(re.findall(r'id="setting-([^"]+)"(.*?)(?=id="setting-|$)', page, re.S))
    for name in names:
        assert name in entries, 'the configuration reference has no entry for %s' % name
        entry = plain(entries[name]).replace(' :', ':')
        assert settings.PREFIX + name in entry
        if name in settings.REQUIRED:
            assert 'Default: required' in entry, entry
        elif name in options.defaults():
            expected = render(options.defaults()[name])
            if expected.startswith(':func:'):   # a function: shown by its name
                expected = expected.split('`')[1]
            assert 'Default: ' + expected.replace('``', '') in entry, (name, entry)
    assert 'mongodb_session.client.&lt;option&gt;' in page


def test_connection_defaults_in_the_docs_are_the_codes(built):
    """The connection settings' defaults come from the option table; the notes
    the extension writes instead, for url and db_name, are checked here."""
    pytest.importorskip('mongomock')
    assert set(extension().DEFAULT_NOTES) == {'url', 'db_name'}
    assert options.CONNECTION['coll_name'].default == 'sessions'
    factory = settings.session_factory_from_settings({
        'mongodb_session.url': 'mongomock://localhost/named_in_url',
        'mongodb_session.secret': 'a secret for the docs test, 32 bytes or more',
    })
    assert factory.connection.namespace() == 'named_in_url.sessions'


def test_api_reference_documents_every_public_name(built):
    done, html_dir = built
    assert done.returncode == 0, done.stdout + done.stderr
    page = page_text(html_dir, 'api')
    for name in pyramid_mongosession.__all__:
        assert 'id="pyramid_mongosession.%s"' % name in page, \
            'docs/api.rst does not document pyramid_mongosession.%s' % name
    for name in ('pyramid_mongosession.session.SessionOptions',
                 'pyramid_mongosession.plan.decide',
                 'pyramid_mongosession.store.SessionStore',
                 'pyramid_mongosession.session.MongoSession',
                 'pyramid_mongosession.cli.main'):
        assert 'id="%s"' % name in page, 'docs/api.rst does not document %s' % name


def test_command_reference_shows_every_subcommand(built):
    from pyramid_mongosession.cli import COMMANDS
    done, html_dir = built
    assert done.returncode == 0, done.stdout + done.stderr
    page = plain(page_text(html_dir, 'cli'))
    for command in COMMANDS:
        assert '$ pmongosession %s --help' % command in page
        assert 'usage: pmongosession %s' % command in page


def test_every_page_is_in_the_table_of_contents(built):
    done, html_dir = built
    assert done.returncode == 0, done.stdout + done.stderr
    pages = sorted(name[:-4] for name in os.listdir(DOCS) if name.endswith('.rst'))
    index = page_text(html_dir, 'index')
    for page in pages:
        if page != 'index':
            assert 'href="%s.html"' % page in index, '%s.rst is not in the toctree' % page


def test_precedence_table_and_decide_have_the_same_cases():
    """docs/options.rst's precedence rows are decide()'s numbered cases, in order."""
    with open(os.path.join(DOCS, 'options.rst')) as page:
        text = page.read()
    table = text[text.index('Precedence\n'):text.index('No resurrection')]
    rows = re.findall(r'^   \* - (\d+)$', table, re.M)
    code = inspect.getsource(plan.decide)
    cases = re.findall(r'^\s+# (\d+)\. ', code, re.M)
    returns = code.count('return Plan(')
    assert rows == cases == [str(n) for n in range(1, returns + 1)]
