"""OutageBreaker on its own, with a clock the test moves (see test_faults for the real server)."""
import pytest
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

from pyramid_mongosession import SessionBackendError
from pyramid_mongosession.outage import OutageBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def breaker(clock):
    return OutageBreaker(5.0, clock=clock)


def test_calls_pass_while_the_server_answers(breaker):
    for _ in range(3):
        probe = breaker.admit()
        assert probe is False
        breaker.record(probe)
    breaker.record(False, OperationFailure('duplicate key', code=11000))   # an answer
    assert breaker.admit() is False


def test_unreachable_server_fails_calls_at_once_until_the_interval(breaker, clock):
    breaker.record(breaker.admit(), ServerSelectionTimeoutError('no servers'))
    clock.now += 4.9
    with pytest.raises(SessionBackendError, match='unavailable.*no servers'):
        breaker.admit()
    clock.now += 0.2
    assert breaker.admit() is True                 # one probe
    with pytest.raises(SessionBackendError):       # the others still fail at once
        breaker.admit()


def test_failed_probe_starts_the_wait_again(breaker, clock):
    breaker.record(breaker.admit(), AutoReconnect('connection refused'))
    clock.now += 5
    probe = breaker.admit()
    breaker.record(probe, AutoReconnect('connection refused'))
    clock.now += 4
    with pytest.raises(SessionBackendError):
        breaker.admit()
    clock.now += 1
    assert breaker.admit() is True


def test_successful_probe_resumes_service(breaker, clock):
    breaker.record(breaker.admit(), AutoReconnect('connection refused'))
    clock.now += 5
    breaker.record(breaker.admit())
    assert [breaker.admit() for _ in range(3)] == [False, False, False]


def test_a_probe_that_never_reached_the_server_lets_another_try(breaker, clock):
    breaker.record(breaker.admit(), AutoReconnect('connection refused'))
    clock.now += 5
    breaker.abandon(breaker.admit())
    assert breaker.admit() is True


def test_server_errors_that_are_answers_do_not_open_it(breaker):
    breaker.record(breaker.admit(), OperationFailure('not authorized', code=13))
    assert breaker.admit() is False
