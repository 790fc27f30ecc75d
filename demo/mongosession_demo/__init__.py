"""A small Pyramid application whose sessions live in MongoDB.

Each page shows one feature of pyramid_mongosession; ``views.py`` holds them
all. Run it with ``pserve development.ini`` (sessions in memory, no server
needed) or ``pserve production.ini MONGODB_URL=mongodb://host:27017/demo``.

``pserve cookie-sessions.ini`` runs it as it would have run before: on
Pyramid's signed cookie sessions (``demo.cookie_sessions = true``). Then
``pserve migrated.ini MONGODB_URL=...`` runs it on pyramid_mongosession,
taking each visitor's cookie session over on their first request.
"""
from pyramid.config import Configurator
from pyramid.session import SignedCookieSessionFactory
from pyramid.settings import asbool


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include('pyramid_jinja2')
        if asbool(settings.get('demo.cookie_sessions')):
            # Before the migration: the whole session in a signed cookie.
            config.set_session_factory(SignedCookieSessionFactory(
                settings['demo.cookie_secret'], httponly=True))
        else:
            config.include('pyramid_mongosession')
        config.add_jinja2_search_path('mongosession_demo:templates')
        # Every POST must carry the session's CSRF token (field csrf_token).
        config.set_default_csrf_options(require_csrf=True)
        config.add_static_view('static', 'mongosession_demo:static', cache_max_age=3600)
        config.add_route('home', '/')
        config.add_route('notes', '/notes')
        config.add_route('login', '/login')
        config.add_route('logout', '/logout')
        config.add_route('private', '/private')
        config.add_route('stream', '/stream')
        config.add_route('inspect', '/inspect')
        config.add_route('sessions', '/sessions')
        config.add_route('sign_out_session', '/sessions/sign-out')
        config.add_route('sign_out_others', '/sessions/sign-out-others')
        config.scan('.views')
    return config.make_wsgi_app()
