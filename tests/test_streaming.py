"""``late_store`` with a streamed body: what happens while the body is sent.

On the real server and on the embedded backend (``backend_collection``).
"""
import pytest
from pyramid.response import Response


def streaming(action):
    """A view that streams its body and calls ``action(session)`` half way through."""
    def view(request):
        session = request.session
        session.options['late_store'] = True

        def body():
            yield b'head\n'
            action(session)
            yield b'tail\n'
        return Response(app_iter=body(), content_length=10)
    return view


def test_late_store_with_change_id_on_a_new_session(backend_collection, build_app):
    def act(session):
        session['user'] = 'alice'
        session.options['change_id'] = True
    app = build_app(backend_collection, views={'stream': streaming(act)})
    app.get('/stream')
    assert app.get('/session').json['data'] == {'user': 'alice'}


def test_late_store_invalidate_while_streaming_retires_the_old_session(backend_collection,
                                                                       build_app):
    def act(session):
        session.invalidate()
        session['notice'] = 'signed out'
    app = build_app(backend_collection, views={'stream': streaming(act)})
    app.get('/session?set=user:"alice"')
    app.get('/stream')
    assert backend_collection.count_documents({}) == 0
    assert app.get('/session').json['data'] == {}


def test_late_store_keeps_content_length(backend_collection, build_app):
    app = build_app(backend_collection,
                    views={'stream': streaming(lambda session: session.__setitem__('a', 1))})
    assert app.get('/stream').headers['Content-Length'] == '10'


def test_late_store_saves_nothing_when_the_stream_breaks(backend_collection, build_app):
    def view(request):
        request.session.options['late_store'] = True

        def body():
            yield b'partial'
            request.session['paid'] = True
            raise RuntimeError('the stream broke')
        return Response(app_iter=body())
    app = build_app(backend_collection, views={'broken': view})
    app.get('/session?set=order:"pending"')
    with pytest.raises(RuntimeError):
        app.get('/broken')
    assert app.get('/session').json['data'] == {'order': 'pending'}
