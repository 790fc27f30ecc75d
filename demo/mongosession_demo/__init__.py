"""A Pyramid application whose session lives in MongoDB (or, for development, in memory)."""
from pyramid.config import Configurator
from pyramid.response import Response


def counter(request):
    session = request.session
    session['visits'] = session.get('visits', 0) + 1
    return Response(
        '<!doctype html><title>pyramid_mongosession demo</title>'
        '<h1>You have been here %d time(s).</h1>' % session['visits'])


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.include('pyramid_mongosession')
        config.add_route('counter', '/')
        config.add_view(counter, route_name='counter')
    return config.make_wsgi_app()
