from pyramid.interfaces import ISession
from zope.interface.verify import verifyObject


def cookie_of(response):
    return response.headers.get('Set-Cookie')


def test_counter_survives_requests(app):
    assert app.get('/session?set=n:1').json['new'] is True
    body = app.get('/session').json
    assert body['new'] is False
    assert body['data'] == {'n': 1}


def test_session_provides_isession(app):
    captured = {}

    def view(request):
        captured['session'] = request.session
        from pyramid.response import Response
        return Response('ok')
    app.app.registry  # the app exists
    from .conftest import make_config, SECRET
    from pyramid_mongosession import MongoSessionFactory
    factory = app.app.registry.queryUtility(__import__('pyramid.interfaces', fromlist=['ISessionFactory']).ISessionFactory)
    config = make_config(factory)
    config.add_route('capture', '/capture')
    config.add_view(view, route_name='capture')
    import webtest
    webtest.TestApp(config.make_wsgi_app()).get('/capture')
    assert verifyObject(ISession, captured['session'])
