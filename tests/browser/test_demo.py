"""The demo's flows in a real browser, against a real server process and MongoDB."""
import re
import time

from .conftest import session_cookie

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None


def log_in(page, name, password='demo'):
    page.goto('/login')
    page.fill('input[name=username]', name)
    page.fill('input[name=password]', password)
    page.click('form.stacked button')


def replay(new_context, base_url, cookie):
    """A fresh browser holding only ``cookie``: what a stolen cookie would give."""
    context = new_context(base_url)
    context.add_cookies([{'name': cookie['name'], 'value': cookie['value'], 'url': base_url}])
    return context


def test_counter_notes_and_flash(page, shoot):
    page.goto('/')
    expect(page.locator('#visits')).to_have_text('1')
    page.reload()
    expect(page.locator('#visits')).to_have_text('2')

    page.fill('input[name=note]', 'Buy milk')
    page.click('form.inline button')
    expect(page.locator('.flash')).to_have_text('Note saved.')
    expect(page.locator('#notes li')).to_have_text(['Buy milk'])
    page.fill('input[name=note]', 'Call Ada')
    page.click('form.inline button')
    expect(page.locator('#notes li')).to_have_text(['Buy milk', 'Call Ada'])
    expect(page.locator('#visits')).to_have_text('4')
    shoot(page, 'counter')

    page.reload()  # a flash message is shown once
    expect(page.locator('.flash')).to_have_count(0)
    expect(page.locator('#notes li')).to_have_count(2)


def test_two_tabs_share_one_session(context):
    first, second = context.new_page(), context.new_page()
    first.goto('/')
    expect(first.locator('#visits')).to_have_text('1')
    second.goto('/')
    expect(second.locator('#visits')).to_have_text('2')
    first.reload()
    expect(first.locator('#visits')).to_have_text('3')

    log_in(second, 'carol')
    expect(second.locator('#user')).to_contain_text('carol')
    first.reload()  # the login, and its new id, reach the other tab
    expect(first.locator('#user')).to_contain_text('carol')
    expect(first.locator('#visits')).to_have_text('5')


def test_login_rotates_the_session_id(context, page, demo_server, new_context, shoot):
    page.goto('/inspect')
    expect(page.locator('#no-session')).to_be_visible()
    assert session_cookie(context) is None  # nothing stored, no cookie

    page.goto('/')
    log_in(page, 'alice', password='wrong')
    expect(page.locator('.error')).to_have_text('Wrong user name or password.')
    before = session_cookie(context)
    assert before is not None
    page.goto('/inspect')
    old_prefix = page.inner_text('#session-id')

    page.goto('/login')
    page.fill('input[name=username]', 'alice')
    shoot(page, 'login')
    page.fill('input[name=password]', 'demo')
    page.click('form.stacked button')
    expect(page.locator('.flash')).to_contain_text('Welcome, alice')
    expect(page.locator('#user')).to_contain_text('alice')
    expect(page.locator('#visits')).to_have_text('2')  # the data moved to the new id

    after = session_cookie(context)
    assert after['value'] != before['value']
    assert after['httpOnly'] and after['sameSite'] == 'Lax'
    page.goto('/inspect')
    assert page.inner_text('#session-id') != old_prefix

    # The cookie from before the login no longer opens any session. (Within
    # rotation_grace the server leaves that cookie alone rather than clear it,
    # so that a request still in flight cannot log the new session out.)
    old = replay(new_context, demo_server.url, before).new_page()
    old.goto('/inspect')
    expect(old.locator('#no-session')).to_be_visible()
    expect(old.locator('.account')).to_contain_text('Log in')

    # The new one does.
    current = replay(new_context, demo_server.url, after).new_page()
    current.goto('/')
    expect(current.locator('#user')).to_contain_text('alice')


def test_logout_expires_the_session(context, page, demo_server, new_context):
    log_in(page, 'bob')
    expect(page.locator('#user')).to_contain_text('bob')
    cookie = session_cookie(context)
    assert cookie is not None

    page.click('.account button')
    expect(page.locator('h1')).to_have_text('You are logged out.')
    expect(page.locator('.account')).to_contain_text('Log in')
    assert session_cookie(context) is None

    old = replay(new_context, demo_server.url, cookie).new_page()
    old.goto('/inspect')
    expect(old.locator('#no-session')).to_be_visible()

    page.goto('/')  # a new session starts from scratch
    expect(page.locator('#visits')).to_have_text('1')
    expect(page.locator('.account')).to_contain_text('Log in')


def test_post_without_csrf_token_is_rejected(context, page, shoot):
    page.goto('/')
    token = page.input_value('form.inline input[name=csrf_token]')
    assert len(token) == 40

    # A form that lost its token, submitted from the page.
    page.eval_on_selector('form.inline input[name=csrf_token]', 'input => input.remove()')
    page.fill('input[name=note]', 'forged')
    with page.expect_response(lambda response: response.url.endswith('/notes')) as answer:
        page.click('form.inline button')
    assert answer.value.status == 400
    expect(page.locator('h1')).to_have_text('Form rejected')
    shoot(page, 'csrf-rejected')

    # Posts with the browser's cookie: no token, a wrong token, the right one.
    assert context.request.post('/notes', form={'note': 'forged'}).status == 400
    wrong_token = {'note': 'forged', 'csrf_token': '0' * 40}
    assert context.request.post('/notes', form=wrong_token).status == 400
    assert context.request.post('/notes', form={'note': 'kept', 'csrf_token': token}).ok

    page.goto('/')
    expect(page.locator('#notes li')).to_have_text(['kept'])


def test_private_page_saves_nothing(page, shoot):
    page.goto('/')
    page.goto('/')
    expect(page.locator('#visits')).to_have_text('2')
    page.goto('/private')
    expect(page.locator('#before')).to_have_text('2')
    expect(page.locator('#during')).to_have_text('3')
    shoot(page, 'private')
    page.goto('/')
    expect(page.locator('#visits')).to_have_text('3')  # not 4: the private change was dropped


def test_streamed_changes_are_stored_after_the_body(page, shoot):
    log_in(page, 'alice')
    page.goto('/stream')
    expect(page.locator('#steps li')).to_have_count(5)
    expect(page.locator('#done')).to_be_visible()
    shoot(page, 'stream')

    # late_store writes once the server has sent the whole body, which may
    # be just after the browser has shown it: allow that moment.
    deadline = time.monotonic() + 5
    while True:
        page.goto('/inspect')
        if 'streamed' in page.inner_text('#data'):
            break
        assert time.monotonic() < deadline, 'the streamed change was never stored'
        time.sleep(0.1)
    row = page.locator('#data tr', has_text='streamed')
    expect(row.locator('td').nth(1)).to_have_text('5')
    expect(page.locator('#data tr', has_text='user').locator('td').nth(1)).to_have_text('"alice"')
    expect(page.locator('#session-id')).to_have_text(re.compile(r'^[A-Za-z0-9_-]{8}…$'))
    expect(page.locator('#created')).to_contain_text('UTC')
    expect(page.locator('#expires')).to_contain_text('UTC')
    shoot(page, 'inspector')


def test_counter_survives_an_app_restart(make_server, new_context, demo_db_url):
    server = make_server('production.ini', MONGODB_URL=demo_db_url)
    page = new_context(server.url).new_page()
    page.goto('/')
    page.goto('/')
    expect(page.locator('#visits')).to_have_text('2')

    first_pid = server.process.pid
    server.restart()
    assert server.process.pid != first_pid
    page.reload()
    expect(page.locator('#visits')).to_have_text('3')


def test_development_ini_serves_from_memory(make_server, new_context):
    server = make_server('development.ini')  # mongomock: no database server involved
    page = new_context(server.url).new_page()
    page.goto('/')
    page.reload()
    expect(page.locator('#visits')).to_have_text('2')
    page.goto('/inspect')
    expect(page.locator('#data tr', has_text='visits')).to_contain_text('2')


def test_remember_me_checkbox_sits_beside_its_label(page):
    page.goto('/login')
    box = page.locator('input[name=remember]').bounding_box()
    label = page.locator('label.inline').bounding_box()
    # One line: the label is no taller than a line, and the box is within it, on its left.
    assert label['height'] < 2 * box['height'] + 16
    assert label['y'] <= box['y'] and box['y'] + box['height'] <= label['y'] + label['height']
    assert box['x'] - label['x'] < 5


def test_remember_me_makes_the_login_outlive_the_browser(context, page):
    log_in(page, 'carol')
    expect(page.locator('#user')).to_contain_text('carol')
    assert session_cookie(context)['expires'] == -1          # a browser-session cookie

    page.goto('/login')
    page.fill('input[name=username]', 'carol')
    page.fill('input[name=password]', 'demo')
    page.check('input[name=remember]')
    page.click('form.stacked button')
    expect(page.locator('#user')).to_contain_text('carol')
    remembered = session_cookie(context)['expires'] - time.time()
    assert 29 * 24 * 3600 < remembered <= 30 * 24 * 3600     # it survives a restart
    page.goto('/inspect')
    expires = page.inner_text('#expires')
    assert expires != 'never'


def test_active_sessions_sign_out_another_browser(new_context, demo_server, shoot):
    """One user in two browsers: the first signs the second out, which is logged out
    on its next request."""
    first = new_context(demo_server.url).new_page()
    second = new_context(demo_server.url).new_page()
    for page in (first, second):
        log_in(page, 'erin')
        expect(page.locator('#user')).to_contain_text('erin')

    first.goto('/sessions')
    rows = first.locator('#sessions tr.session')
    expect(rows).to_have_count(2)
    this = first.locator('#sessions tr.session.current')
    expect(this).to_have_count(1)
    expect(this).to_contain_text('this session')
    expect(this).to_contain_text('127.0.0.0/24')     # the network, never the address
    expect(this.locator('button')).to_have_count(0)
    shoot(first, 'sessions')

    first.locator('#sessions tr.session:not(.current) button').click()
    expect(first.locator('.flash')).to_have_text('That session is signed out.')
    expect(rows).to_have_count(1)
    expect(first.locator('#sign-out-others')).to_have_count(0)

    second.reload()   # its next request: the session is gone
    expect(second.locator('.account')).to_contain_text('Log in')
    expect(second.locator('#user')).to_have_count(0)
    first.goto('/')
    expect(first.locator('#user')).to_contain_text('erin')


def test_active_sessions_sign_out_all_others(new_context, demo_server):
    pages = [new_context(demo_server.url).new_page() for _ in range(3)]
    for page in pages:
        log_in(page, 'frank')
        expect(page.locator('#user')).to_contain_text('frank')
    other_user = new_context(demo_server.url).new_page()
    log_in(other_user, 'grace')

    here = pages[0]
    here.goto('/sessions')
    expect(here.locator('#sessions tr.session')).to_have_count(3)
    here.click('#sign-out-others button')
    expect(here.locator('.flash')).to_have_text('Signed out of 2 other sessions.')
    expect(here.locator('#sessions tr.session')).to_have_count(1)
    for page in pages[1:]:
        page.goto('/')
        expect(page.locator('.account')).to_contain_text('Log in')
    here.goto('/')
    expect(here.locator('#user')).to_contain_text('frank')
    other_user.goto('/')
    expect(other_user.locator('#user')).to_contain_text('grace')


def test_sessions_page_needs_a_login(page):
    page.goto('/sessions')
    expect(page).to_have_url(re.compile(r'/login$'))


def test_migrated_from_cookie_sessions_nobody_is_logged_out(make_server, new_context,
                                                            demo_db_url, shoot):
    """The demo on Pyramid's cookie sessions, then restarted on pyramid_mongosession
    with the importer: the visitor keeps their login, notes and counter."""
    before = make_server('cookie-sessions.ini')
    context = new_context(before.url)
    page = context.new_page()
    page.goto('/')
    page.goto('/')
    page.fill('input[name=note]', 'Water the plants')
    page.click('form.inline button')
    log_in(page, 'olivia')
    expect(page.locator('#user')).to_contain_text('olivia')
    expect(page.locator('#visits')).to_have_text('4')
    expect(page.locator('#mode')).to_contain_text('Before the migration')
    old_cookie = session_cookie(context)
    before.stop()

    # The same browser (cookies are per host, not per port) on the migrated app.
    after = make_server('migrated.ini', MONGODB_URL=demo_db_url)
    page.goto(after.url + '/')
    expect(page.locator('#user')).to_contain_text('olivia')
    expect(page.locator('#visits')).to_have_text('5')
    expect(page.locator('#notes li')).to_have_text(['Water the plants'])
    expect(page.locator('#mode')).to_contain_text('Migrated from cookie sessions')
    shoot(page, 'migrated')
    assert session_cookie(context)['value'] != old_cookie['value']

    page.goto(after.url + '/inspect')   # a MongoDB session now
    expect(page.locator('#data tr', has_text='user')).to_contain_text('"olivia"')
    page.goto(after.url + '/sessions')  # indexed under its user
    expect(page.locator('#sessions tr.session.current')).to_have_count(1)

    # The old cookie, replayed elsewhere, opens nothing.
    thief = replay(new_context, after.url, old_cookie).new_page()
    thief.goto(after.url + '/')
    expect(thief.locator('.account')).to_contain_text('Log in')
    expect(thief.locator('#visits')).to_have_text('1')
