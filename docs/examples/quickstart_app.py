"""The quick start's application: sessions, sign-in, CSRF, "sign out everywhere else".

One complete Pyramid application, as docs/quickstart.rst shows it (the page
includes this file) and as tests/test_quickstart.py runs it. Serve it with
an ini file whose application section says ``use = call:quickstart_app:main``
(with this directory on ``PYTHONPATH``) and has the ``mongodb_session.*``
settings.
"""
import hmac

from pyramid.authentication import SessionAuthenticationHelper
from pyramid.config import Configurator
from pyramid.csrf import SessionCSRFStoragePolicy, get_csrf_token
from pyramid.httpexceptions import HTTPForbidden, HTTPSeeOther, HTTPServiceUnavailable
from pyramid.security import forget, remember

from pyramid_mongosession import SessionBackendError, get_session_factory

#: Yours: a user store, with password hashes (argon2, bcrypt, scrypt), not this.
USERS = {'alice': 'correct horse battery staple'}


def check_password(login, password):
    expected = USERS.get(login)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


class SecurityPolicy:
    """Pyramid's session authentication: the user id is kept in the session,
    under ``auth.userid``, which is also pyramid_mongosession's default
    ``user_key``, so each session is listed under its user."""

    def __init__(self):
        self.helper = SessionAuthenticationHelper()

    def identity(self, request):
        userid = self.helper.authenticated_userid(request)
        return userid if userid in USERS else None    # yours: look the user up

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        return self.identity(request) is not None

    def remember(self, request, userid, **kw):
        return self.helper.remember(request, userid, **kw)

    def forget(self, request, **kw):
        return self.helper.forget(request, **kw)


def home(request):
    session = request.session
    session['visits'] = session.get('visits', 0) + 1
    return {'user': request.authenticated_userid, 'visits': session['visits'],
            'flash': session.pop_flash(),
            'csrf_token': get_csrf_token(request)}    # for the forms that POST


def login(request):
    name = request.POST.get('login', '')
    if not check_password(name, request.POST.get('password', '')):
        raise HTTPForbidden('wrong login or password')
    request.session.change_id()          # a new session id: defeats session fixation
    headers = remember(request, name)    # request.session['auth.userid'] = name
    request.session.flash('Welcome, %s.' % name)
    return HTTPSeeOther(request.route_url('home'), headers=headers)


def logout(request):
    request.session.expire()             # deletes the session, clears the cookie
    return HTTPSeeOther(request.route_url('home'), headers=forget(request))


def sessions(request):
    """The signed-in user's sessions, this one marked."""
    factory = get_session_factory(request)
    return [dict(record.as_dict(), this=record.handle == request.session.handle)
            for record in factory.user_sessions(request.authenticated_userid)]


def sign_out_elsewhere(request):
    """After a password change, say: end the user's other sessions."""
    factory = get_session_factory(request)
    revoked = factory.revoke_user(request.authenticated_userid, keep=request.session.handle)
    return {'revoked': revoked}


def main(global_config=None, **settings):
    config = Configurator(settings=settings)
    config.include('pyramid_mongosession')              # the mongodb_session.* settings
    config.set_security_policy(SecurityPolicy())
    config.set_csrf_storage_policy(SessionCSRFStoragePolicy())   # the token in the session
    config.set_default_csrf_options(require_csrf=True)  # every POST needs the token
    config.add_exception_view(lambda exc, request: HTTPServiceUnavailable(),
                              context=SessionBackendError)        # MongoDB down: a 503
    config.add_route('home', '/')
    config.add_route('login', '/login')
    config.add_route('logout', '/logout')
    config.add_route('sessions', '/sessions')
    config.add_route('sign_out_elsewhere', '/sessions/sign-out-elsewhere')
    config.add_view(home, route_name='home', renderer='json')
    config.add_view(login, route_name='login', request_method='POST')
    config.add_view(logout, route_name='logout', request_method='POST')
    config.add_view(sessions, route_name='sessions', renderer='json', permission='view')
    config.add_view(sign_out_elsewhere, route_name='sign_out_elsewhere',
                    request_method='POST', renderer='json', permission='view')
    return config.make_wsgi_app()
