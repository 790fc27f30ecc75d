"""The demo's pages. Each one shows one thing ``request.session`` can do."""
import datetime
import time

from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response
from pyramid.view import exception_view_config, view_config
from pyramid_jinja2 import IJinja2Environment

from pyramid_mongosession import SessionBackendError, get_session_factory

#: Any user name logs in with this password: it is a demo.
DEMO_PASSWORD = 'demo'
#: The streaming page sends this many parts, this many seconds apart.
STREAM_STEPS = 5
STREAM_DELAY = 0.2


@view_config(route_name='home', renderer='home.jinja2')
def home(request):
    """A visit counter, the flash messages, and a CSRF-protected form."""
    session = request.session
    session['visits'] = session.get('visits', 0) + 1
    return {
        'visits': session['visits'],
        'notes': session.get('notes', []),
        'messages': session.pop_flash(),
    }


@view_config(route_name='notes', request_method='POST')
def add_note(request):
    # require_csrf (see main) has already rejected a POST without the token.
    note = request.POST.get('note', '').strip()
    if note:
        # An in-place change: the session notices it, no changed() call needed.
        request.session.setdefault('notes', []).append(note)
        request.session.flash('Note saved.')
    return HTTPSeeOther(request.route_url('home'))


REMEMBER_ME = 30 * 24 * 3600   # seconds


def cookie_sessions(request):
    """Whether the demo runs as before its migration, on Pyramid's cookie sessions."""
    return not hasattr(request.session, 'options')


@view_config(route_name='login', renderer='login.jinja2')
def login(request):
    error = None
    if request.method == 'POST':
        name = request.POST.get('username', '').strip()
        if name and request.POST.get('password') == DEMO_PASSWORD:
            request.session['user'] = name
            if not cookie_sessions(request):
                # A new session id after login defeats session fixation: the
                # data moves to the new id and the old id stops working.
                request.session.options['change_id'] = True
                if request.POST.get('remember'):
                    # This session's own idle timeout; its cookie becomes persistent.
                    request.session.options['timeout'] = REMEMBER_ME
                request.session.flash('Welcome, %s. Your session now has a new id.' % name)
            else:
                request.session.flash('Welcome, %s.' % name)
            return HTTPSeeOther(request.route_url('home'))
        error = 'Wrong user name or password.'
    return {'error': error}


@view_config(route_name='logout', request_method='POST', renderer='logged_out.jinja2')
def logout(request):
    if cookie_sessions(request):
        request.session.invalidate()
        return {'user': None}
    # Deletes the session's document and clears the cookie; this wins over
    # anything else the request does to the session.
    request.session.options['expire'] = True
    return {'user': None}


@view_config(route_name='private', renderer='private.jinja2')
def private(request):
    """Changes the session, but with no_store none of it is saved."""
    session = request.session
    session.options['no_store'] = True
    before = session.get('visits', 0)
    session['visits'] = before + 1
    return {'before': before, 'during': session['visits']}


@view_config(route_name='stream')
def stream(request):
    """A streamed page that changes the session while it is being sent.

    Without late_store the session would be written before the body, and the
    changes made while streaming would be lost.
    """
    session = request.session
    session.options['late_store'] = True

    def steps():
        for step in range(1, STREAM_STEPS + 1):
            time.sleep(STREAM_DELAY)
            session['streamed'] = step
            yield step

    env = request.registry.getUtility(IJinja2Environment, name='.jinja2')
    parts = env.get_template('stream.jinja2').generate(
        request=request, steps=steps(), total=STREAM_STEPS)
    return Response(app_iter=(part.encode('utf-8') for part in parts),
                    content_type='text/html', charset='utf-8')


def _utc(seconds):
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime('%Y-%m-%d %H:%M:%S UTC')


@view_config(route_name='inspect', renderer='inspect.jinja2')
def inspector(request):
    """What is stored: the id's first characters, the times and the data."""
    session = request.session
    session_id = session.options['id']
    if session_id is None:
        return {'session_id': None}
    return {
        'session_id': session_id[:8],
        'created': _utc(session.created),
        'expires': _utc(session.expires),
        'data': sorted(session.items()),
    }


def _seen(moment):
    return moment.strftime('%Y-%m-%d %H:%M') if moment is not None else None


@view_config(route_name='sessions', renderer='sessions.jinja2')
def sessions(request):
    """The signed-in user's sessions, this one marked, each with a "sign out" button."""
    session = request.session
    user = session.get('user')
    if user is None:
        return HTTPSeeOther(request.route_url('login'))
    current = session.handle
    rows = [{
        'handle': record.handle,
        'current': record.handle == current,
        'created': _seen(record.created),
        'last_seen': _seen(record.last_seen),
        'agent': record.user_agent or 'not recorded',
        'network': record.client_address,
    } for record in get_session_factory(request).user_sessions(user)]
    return {'sessions': rows, 'messages': session.pop_flash()}


@view_config(route_name='sign_out_session', request_method='POST')
def sign_out_session(request):
    """Sign out one session; the user id makes sure it is one of this user's."""
    user = request.session.get('user')
    handle = request.POST.get('handle', '')
    if user is not None and handle != request.session.handle:
        if get_session_factory(request).revoke_session(handle, userid=user):
            request.session.flash('That session is signed out.')
    return HTTPSeeOther(request.route_url('sessions'))


@view_config(route_name='sign_out_others', request_method='POST')
def sign_out_others(request):
    user = request.session.get('user')
    if user is not None:
        count = get_session_factory(request).revoke_user(user, keep=request.session.handle)
        request.session.flash('Signed out of %d other session%s.'
                              % (count, '' if count == 1 else 's'))
    return HTTPSeeOther(request.route_url('sessions'))


@exception_view_config(BadCSRFToken, renderer='error.jinja2')
def bad_csrf_token(exc, request):
    request.response.status = 400
    return {'title': 'Form rejected',
            'message': 'The form was missing its CSRF token, or the token was wrong. '
                       'Reload the page and try again.'}


@exception_view_config(SessionBackendError, renderer='error.jinja2')
def session_store_down(exc, request):
    request.response.status = 503
    return {'title': 'Session store unavailable', 'user': None,
            'message': 'The session store could not be reached. Try again shortly.'}
