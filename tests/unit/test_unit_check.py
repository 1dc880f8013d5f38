"""`check` right after `deregister` (a deregistration since the trader's error ends it at once) and
`check --wait` (judged again until healthy or the deadline)."""
import pytest

from redismedian import health as H
from redismedian.ops import check_deployment
from redismedian.status import gather, render
from tests.unit.test_unit_garbage import Pipeline

URL = "redis://127.0.0.1:1/0"


# -- check right after deregister ----------------------------------------------------------------------
def test_check_is_right_at_once_after_deregistering_the_missing_strategy(env):
    """The trader settles an epoch in error naming X and writes its next verdict only at the next
    boundary; the deregistration of X is known the moment it is written: `check` says OK at once
    (and why), and the next boundary publishes over Y alone, as it said."""
    from redismedian.status import deregister
    p = Pipeline(env)
    p.epoch(env.E)
    p.epoch(env.E + 1, order=[p.g1, p.g2, p.y, p.t])          # X gives nothing: error at the deadline
    before = check_deployment(gather(env.r, env.k))
    assert not before.healthy and before.problems[0].startswith("trader: error: 1 of 2 strategies missing: X: ")
    env.clock.advance(0.05)
    deregister(env.r, env.k, "X")
    data = gather(env.r, env.k)
    assert data["trader"]["state"] == "error" and data["trader"]["cleared_by"] == ["X"]
    after = check_deployment(data)
    assert after.healthy, after.problems
    assert after.text().startswith(f"OK: X deregistered after the trader's error for epoch {env.E + 1} "), after.text()
    assert "resolved since: X deregistered after this evaluation" in render(data, URL)
    # what check promised: the next epoch is published over Y alone
    p.epoch(env.E + 2, order=[p.g1, p.g2, p.y, p.t])
    data = gather(env.r, env.k)
    assert (data["trader"]["state"], data["trader"]["count"], data["trader"]["cleared_by"]) == ("ok", 1, [])
    assert check_deployment(data).text().startswith(f"OK: trader published 2.0 for epoch {env.E + 2}")


def test_deregistering_one_of_two_missing_strategies_does_not_clear_the_error(env):
    from redismedian.status import deregister
    p = Pipeline(env)
    p.epoch(env.E)
    p.epoch(env.E + 1, order=[p.g1, p.g2, p.t])                # X and Y give nothing
    env.clock.advance(0.05)
    deregister(env.r, env.k, "X")
    data = gather(env.r, env.k)
    assert data["trader"]["cleared_by"] == []
    d = check_deployment(data)
    assert not d.healthy and d.problems[0].startswith("trader: error: 2 of 2 strategies missing: X: ")


@pytest.mark.parametrize("reason,records,strategies,cleared", [
    ("1 of 2 strategies missing: X: no decision", {"X": 1000}, [{"name": "Y", "registered": True, "state": "ok"}],
     ["X"]),
    # deregistered before the trader's evaluation: the error is about something else
    ("1 of 2 strategies missing: X: no decision", {"X": 999}, [], []),
    ("1 of 2 strategies missing: X: no decision", {"X": None}, [], []),
    # a registered strategy still is not ok
    ("1 of 3 strategies missing: X: no decision", {"X": 1000}, [{"name": "Y", "registered": True, "state": "down"}],
     []),
    ("2 of 3 strategies missing: X: a; Z: b", {"X": 1001}, [], []),
    ("2 of 3 strategies missing: X: a; Z: b", {"X": 1001, "Z": 1002}, [], ["X", "Z"]),
    # an error that is not about missing strategies
    ("the registry is being rebuilt", {"X": 1000}, [], []),
])
def test_which_deregistrations_clear_a_trader_error(reason, records, strategies, cleared):
    row = {"state": "error", "reason": reason}
    assert H.cleared_by_deregistration(row, 1000, records, strategies) == cleared
    assert H.cleared_by_deregistration({**row, "state": "ok"}, 1000, records, strategies) == []


def test_names_a_missing_reason_shows():
    assert H.names_in_reason("2 of 5 strategies missing: X: not running (a: b); y.1-z: no decision; and 3 more") == [
        "X", "y.1-z"]
    assert H.names_in_reason("state 'x' is not one a trader writes") == []


# -- check --wait ------------------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def test_check_wait_judges_again_until_healthy_or_the_deadline():
    import redis

    from redismedian.ops import Health, judged_until
    sick, well = Health(False, ["trader: error: X missing"], ""), Health(True, [], "fine")
    clock = _Clock()
    answers = iter([sick, redis.exceptions.ConnectionError("refused"), sick, well])

    def judge():
        clock.t += 0.01            # a verdict takes 10 ms
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a
    h = judged_until(judge, 5, retry=lambda e: isinstance(e, redis.exceptions.ConnectionError), clock=clock,
                     sleep=clock.sleep)
    assert h is well and clock.sleeps == [0.2, 0.2, 0.2], clock.sleeps      # healthy at once: no more waiting
    # still unhealthy at the deadline: the last reason, and how long it waited
    clock = _Clock()
    h = judged_until(lambda: sick, 1, retry=lambda e: True, clock=clock, sleep=clock.sleep)
    assert not h.healthy and h.text() == "UNHEALTHY: trader: error: X missing; still so after waiting 1s"
    assert abs(clock.t - 1.0) < 1e-9 and len(clock.sleeps) == 5
    # no --wait: one verdict, and a Redis error is raised at once
    calls = []
    assert judged_until(lambda: calls.append(1) or sick, None, retry=lambda e: True).text() == \
        "UNHEALTHY: trader: error: X missing" and calls == [1]
    clock = _Clock()
    with pytest.raises(redis.exceptions.ResponseError):   # what retry refuses is never waited out
        judged_until(lambda: (_ for _ in ()).throw(redis.exceptions.ResponseError("NOPERM no")), 5,
                     retry=lambda e: isinstance(e, redis.exceptions.ConnectionError), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []
    # a slow verdict (10,000s of strategies) is judged again at most every twice its cost
    clock = _Clock()

    def slow():
        clock.t += 0.5
        return sick
    judged_until(slow, 3, retry=lambda e: True, clock=clock, sleep=clock.sleep)
    assert clock.sleeps[0] == 1.0
