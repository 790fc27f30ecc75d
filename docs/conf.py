"""Sphinx configuration of the pyramid_mongosession documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html``: warnings are
errors. The settings reference and the ``pmongosession`` help are generated
from the code by the extension in ``_ext/``, so they cannot drift from it.
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '_ext'))
sys.path.insert(0, os.path.dirname(here))  # the package, when it is not installed

project = 'pyramid_mongosession'
author = 'the pyramid_mongosession authors'
copyright = 'the pyramid_mongosession authors'


def _version():
    try:
        from importlib.metadata import version
        return version('pyramid_mongosession')
    except Exception:  # not installed: building from a bare checkout
        return ''


release = _version()
version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
    'mongosession_docs',
]

root_doc = 'index'
exclude_patterns = ['_build']
templates_path = []
html_theme = 'alabaster'
html_static_path = ['_static'] if os.path.isdir(os.path.join(here, '_static')) else []
html_theme_options = {
    'description': 'Server-side Pyramid sessions kept in MongoDB',
    'fixed_sidebar': False,
    'page_width': '1100px',
    'sidebar_width': '230px',
}

autodoc_member_order = 'bysource'
autodoc_default_options = {
    'members': True,
    'show-inheritance': True,
}
# Docstrings refer to Pyramid, WebOb and pymongo objects that this build does
# not document; with no network there is no intersphinx, so such references
# stay plain text (nitpicky mode would flag them).
nitpicky = False
