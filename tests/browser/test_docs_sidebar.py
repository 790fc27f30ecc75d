"""The documentation's sidebar shows the project's name whole, on one line."""
import os
import subprocess
import sys

import pytest

from ..test_docs import DOCS, REPO, need_sphinx

pytestmark = pytest.mark.docs


@pytest.fixture(scope='module')
def index_page(tmp_path_factory):
    need_sphinx()
    out = tmp_path_factory.mktemp('sidebar')
    done = subprocess.run([sys.executable, '-m', 'sphinx', '-E', '-q', '-b', 'html', DOCS,
                           str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return 'file://' + os.path.join(str(out), 'index.html')


@pytest.mark.parametrize('width', [1280, 900])
def test_the_sidebar_title_is_not_broken_mid_word(browser, index_page, width):
    page = browser.new_page(viewport={'width': width, 'height': 800})
    try:
        page.goto(index_page)
        title = page.locator('div.sphinxsidebar h1.logo a')
        assert title.inner_text() == 'pyramid_mongosession'
        line = page.evaluate(
            "parseFloat(getComputedStyle(document.querySelector('h1.logo')).lineHeight)")
        assert title.bounding_box()['height'] < 1.5 * line      # one line
        sidebar = page.locator('div.sphinxsidebarwrapper').bounding_box()
        box = title.bounding_box()
        assert box['x'] + box['width'] <= sidebar['x'] + sidebar['width']   # within it
    finally:
        page.close()
