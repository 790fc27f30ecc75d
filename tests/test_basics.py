def test_counter_survives_requests(app):
    assert app.get('/session?set=n:1').json['new'] is True
    body = app.get('/session').json
    assert body['new'] is False
    assert body['data'] == {'n': 1}
