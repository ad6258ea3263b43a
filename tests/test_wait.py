import pytest

from meshbed import wait
from meshbed.errors import ComponentError, WaitTimeout


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, d):
        self.t += d


def test_until_returns_first_ok_of_final_streak():
    clock = FakeClock()
    seq = iter([False, True, False, True, True, True])
    w = wait.until(lambda: next(seq), deadline=10, interval=1, converge=3, clock=clock, sleep=clock.sleep)
    assert w.value is True
    assert w.first_ok_at == 3.0  # the streak started at the 4th poll
    assert w.polls == 6


def test_until_timeout_says_what_it_saw_and_hint():
    clock = FakeClock()

    def probe():
        raise wait.NotYet("2/3 endpoints")

    with pytest.raises(WaitTimeout) as ei:
        wait.until(probe, deadline=2, interval=0.5, what="endpoints", hint="check the CP", clock=clock, sleep=clock.sleep)
    msg = str(ei.value)
    assert "endpoints" in msg and "2/3 endpoints" in msg and "check the CP" in msg and "2.00s" in msg


def test_fatal_exceptions_end_the_wait():
    clock = FakeClock()

    def probe():
        raise ComponentError("died")

    with pytest.raises(ComponentError):
        wait.until(probe, deadline=5, fatal=(ComponentError,), clock=clock, sleep=clock.sleep)
    assert clock.t == 0.0


@pytest.mark.parametrize("kw", [{"deadline": 0}, {"deadline": 1, "converge": 0}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        wait.until(lambda: True, **kw)
