"""The shared loop: epochs, waking at boundaries, skipping missed epochs, outages, fatal errors, leases."""
import logging
import os
import signal
import threading

import pytest
import redis

from redismedian import component as comp_mod
from redismedian.clock import boundary_ms, epoch_of
from redismedian.common import EXIT_FAILURE, FatalError, Settings
from redismedian.component import Component, DataProblem, Exit, Waiting, acquire_name, install_signal_handlers
from redismedian.connection import Backoff, Outage, RedisSettings
from redismedian.scripts import LEASE_ACQUIRE, META_CREATE
from tests.unit_support import Env, FakeClock, messages

P = 60_000                      # period of the loop tests (ms)
E0 = 28_000_000                 # an epoch in 2023


class _NoRedis:
    """The loop tests' components never reach Redis except through step()."""

    def __init__(self):
        self.time_calls = 0
        self.down = 0            # TIME fails while > 0

    def time(self):
        self.time_calls += 1
        if self.down:
            self.down -= 1
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return [b"0", b"0"]


class SyncingClock(FakeClock):
    """A fake clock whose sync asks the client for TIME, as ServerClock does (so an outage shows there)."""

    def sync(self, client):
        client.time()
        return self.now_ms()


class Recorder(Component):
    kind = "generator"

    def __init__(self, clock, period_ms=P, script=None, **kw):
        super().__init__(Settings(RedisSettings("redis://u:topsecret@127.0.0.1:1/0"), namespace="t", period_ms=period_ms),
                         name="rec", client=_NoRedis(), clock=clock, **kw)
        self.steps = []          # (epoch, server ms when the step ran)
        self.startups = 0
        self.shutdowns = 0
        self.script_steps = list(script or [])   # per call: None, an exception to raise, or a callable

    def startup(self):
        self.startups += 1

    def step(self, epoch):
        self.steps.append((epoch, self.clock.now_ms()))
        if self.script_steps:
            action = self.script_steps.pop(0)
            if isinstance(action, BaseException):
                raise action
            if callable(action):
                action(self, epoch)

    def shutdown(self):
        self.shutdowns += 1


def at(epoch, frac=0.0, period_ms=P):
    return boundary_ms(epoch, period_ms) + int(frac * period_ms)


# -- next_epoch ----------------------------------------------------------------------------------
def test_first_epoch_is_the_current_one_without_waiting():
    c = Recorder(FakeClock(at(E0, 0.4)))
    assert c.next_epoch() == E0
    assert c.clock.waits == []


def test_next_epoch_sleeps_once_until_just_past_the_boundary():
    clock = FakeClock(at(E0, 0.4))
    c = Recorder(clock)
    c.last_epoch = E0
    assert c.next_epoch() == E0 + 1
    assert len(clock.waits) == 1, "one sleep per period, no polling"
    assert clock.waits[0] == pytest.approx(0.6 * P / 1000 + 0.001)
    assert clock.now_ms() == boundary_ms(E0 + 1, P) + 1
    assert epoch_of(clock.now_ms(), P) == E0 + 1


def test_after_a_stall_missed_epochs_are_skipped(caplog):
    clock = FakeClock(at(E0 + 4, 0.7))
    c = Recorder(clock)
    c.last_epoch = E0
    with caplog.at_level(logging.WARNING):
        assert c.next_epoch() == E0 + 4
    assert clock.waits == []
    assert any("skipped 3 missed period(s)" in m for m in messages(caplog))


def test_next_epoch_returns_none_when_stopped():
    clock = FakeClock(at(E0, 0.4))
    c = Recorder(clock)
    c.last_epoch = E0
    c.stop.set()
    assert c.next_epoch() is None


def test_a_clock_that_wakes_early_does_not_act_twice():
    class Early(FakeClock):
        def wait(self, stop, seconds):       # wakes 10 ms before the requested time, then on time
            self.waits.append(seconds)
            self._t += max(0.0, seconds - 0.010) if len(self.waits) == 1 else seconds
            return False
    clock = Early(at(E0, 0.5))
    c = Recorder(clock)
    c.last_epoch = E0
    assert c.next_epoch() == E0 + 1
    assert len(clock.waits) == 2 and clock.now_ms() > boundary_ms(E0 + 1, P)


# -- run -----------------------------------------------------------------------------------------
def test_run_acts_once_per_epoch_at_each_boundary():
    clock = FakeClock(at(E0, 0.3))
    c = Recorder(clock)
    assert c.run(max_epochs=6) == 0
    assert [e for e, _ in c.steps] == list(range(E0, E0 + 6))
    # the first epoch is acted on at once, every later one just after its boundary
    assert c.steps[0][1] == at(E0, 0.3)
    for e, t in c.steps[1:]:
        assert boundary_ms(e, P) < t <= boundary_ms(e, P) + 5
    assert len(clock.waits) == 5, "exactly one sleep per period: no busy polling"
    assert c.startups == 1 and c.shutdowns == 1


def test_run_skips_epochs_missed_during_a_long_step(caplog):
    clock = FakeClock(at(E0, 0.1))
    stall = lambda self, epoch: self.clock.advance(3.5 * P / 1000)   # noqa: E731
    c = Recorder(clock, script=[None, stall])
    with caplog.at_level(logging.WARNING):
        c.run(max_epochs=4)
    # the step of E0+1 ended 3.5 periods later, in E0+4: E0+2 and E0+3 are skipped, not caught up
    assert [e for e, _ in c.steps] == [E0, E0 + 1, E0 + 4, E0 + 5]
    assert any("skipped 2 missed period(s)" in m for m in messages(caplog))


def test_run_stops_when_asked_and_shuts_down():
    clock = FakeClock(at(E0, 0.1))
    c = Recorder(clock, script=[None, lambda self, e: self.stop.set()])
    assert c.run() == 0
    assert len(c.steps) == 2 and c.shutdowns == 1


def test_exit_from_a_step_is_the_exit_status(caplog):
    clock = FakeClock(at(E0, 0.1))
    c = Recorder(clock, script=[Exit("X was deregistered; exiting", 0)])
    with caplog.at_level(logging.INFO):
        assert c.run() == 0
    assert "X was deregistered; exiting" in messages(caplog)
    c = Recorder(FakeClock(at(E0, 0.1)), script=[Exit("gave up", 3)])
    assert c.run() == 3


def test_fatal_error_is_one_log_line_without_traceback(caplog):
    c = Recorder(FakeClock(at(E0, 0.1)), script=[FatalError("name taken", 1)])
    with caplog.at_level(logging.INFO):
        assert c.run() == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["name taken"]
    assert errors[0].exc_info is None
    assert c.shutdowns == 1


@pytest.mark.parametrize("exc", [
    redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled."),
    redis.exceptions.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth' command"),
    redis.exceptions.ResponseError("WRONGPASS invalid username-password pair"),
    redis.exceptions.ResponseError("NOAUTH Authentication required."),
    redis.exceptions.NoPermissionError("NOPERM this user has no permissions to run the 'evalsha' command"),
])
def test_authentication_errors_are_fatal_in_one_line(caplog, exc):
    c = Recorder(FakeClock(at(E0, 0.1)), script=[exc])
    with caplog.at_level(logging.INFO):
        assert c.run() == EXIT_FAILURE
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    msg = errors[0].getMessage()
    # an ACL denial is named as such (the password was right, the user's permissions are not)
    expected = ("denied a command to our user (check its ACL)" if isinstance(exc, redis.exceptions.NoPermissionError)
                else "refused our credentials")
    assert expected in msg and "\n" not in msg
    assert "topsecret" not in msg and "***" in msg
    assert len(c.steps) == 1, "no retry can fix credentials"


def test_authentication_error_at_startup_is_fatal(caplog):
    class AuthFails(Recorder):
        def startup(self):
            raise redis.exceptions.AuthenticationError("invalid password")
    c = AuthFails(FakeClock(at(E0, 0.1)))
    assert c.run() == EXIT_FAILURE
    assert c.steps == []


def test_data_problem_is_logged_once_and_the_loop_goes_on(caplog):
    clock = FakeClock(at(E0, 0.1))
    c = Recorder(clock, script=[DataProblem("t:meta is a string, expected a hash")] * 3 + [None])
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=5) == 0
    assert len(c.steps) == 5
    msgs = messages(caplog)
    assert sum("t:meta is a string" in m and "recovered" not in m for m in msgs) == 1
    assert sum(m.startswith("recovered from") for m in msgs) == 1


def test_response_error_skips_the_epoch_without_crashing(caplog):
    c = Recorder(FakeClock(at(E0, 0.1)), script=[redis.exceptions.ResponseError("ERR user_script:1: boom")])
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=2) == 0
    assert [e for e, _ in c.steps] == [E0, E0 + 1]
    assert any(m.startswith(f"cannot act on epoch {E0}: Redis refused a command: ERR user_script:1: boom")
               for m in messages(caplog, logging.ERROR))


def test_a_bug_in_a_step_is_not_swallowed():
    c = Recorder(FakeClock(at(E0, 0.1)), script=[ZeroDivisionError("bug")])
    with pytest.raises(ZeroDivisionError):
        c.run()
    assert c.shutdowns == 1


def test_shutdown_errors_are_swallowed():
    class BadShutdown(Recorder):
        def shutdown(self):
            raise redis.exceptions.ConnectionError("gone")
    assert BadShutdown(FakeClock(at(E0, 0.1))).run(max_epochs=1) == 0


# -- outages -------------------------------------------------------------------------------------
def _conn_error():
    return redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def test_outage_in_steps_is_logged_once_and_recovery_once(caplog):
    clock = SyncingClock(at(E0, 0.1))
    c = Recorder(clock, script=[None] + [_conn_error() for _ in range(6)])
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=3) == 0
    msgs = messages(caplog)
    assert sum("Redis unavailable at" in m for m in msgs) == 1, msgs
    assert sum("Redis is back at" in m for m in msgs) == 1, msgs
    assert not any("topsecret" in m for m in msgs)
    # retried within the same epoch, which was then acted on once
    assert [e for e, _ in c.steps] == [E0, E0 + 1, E0 + 1, E0 + 1, E0 + 1, E0 + 1, E0 + 1, E0 + 1, E0 + 2]


def test_outage_when_even_time_fails_is_logged_once(caplog):
    clock = SyncingClock(at(E0, 0.1))
    c = Recorder(clock, script=[_conn_error()])
    c.client.down = 5
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=2) == 0
    msgs = messages(caplog)
    assert sum("Redis unavailable at" in m for m in msgs) == 1, msgs
    assert sum("Redis is back at" in m for m in msgs) == 1, msgs


@pytest.mark.parametrize("exc", [redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                                 redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
                                 redis.exceptions.TimeoutError("Timeout reading from socket")])
def test_outage_where_time_answers_but_steps_fail_is_logged_once(caplog, exc):
    """A read-only replica answers TIME but refuses every script: still one outage, not one per retry."""
    clock = SyncingClock(at(E0, 0.1))
    c = Recorder(clock, script=[exc] * 8)
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=1) == 0
    msgs = messages(caplog)
    assert sum("Redis unavailable at" in m for m in msgs) == 1, msgs
    assert sum("Redis is back at" in m for m in msgs) == 1, msgs


def test_outage_retries_back_off_up_to_the_cap():
    clock = SyncingClock(at(E0, 0.01))
    c = Recorder(clock, script=[_conn_error() for _ in range(12)])
    c.run(max_epochs=1)
    retries = clock.waits[:12]
    cap = min(P / 1000, 5.0)
    assert all(0 < d <= cap for d in retries)
    assert retries[-1] >= cap / 2, f"backoff never grew: {retries}"
    assert retries[0] <= 0.1
    assert sum(retries) < 60, "retrying is not waiting a whole period each time"


def test_outage_retries_are_capped_by_a_short_period():
    clock = SyncingClock(at(E0, 0.01, 500))
    c = Recorder(clock, period_ms=500, script=[_conn_error() for _ in range(10)])
    assert c.backoff.cap == 0.5
    c.run(max_epochs=3)
    assert max(clock.waits) <= 0.5 + 0.002


def test_backoff_delays():
    import random
    b = Backoff(cap=5.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    for i, d in enumerate(delays):
        nominal = min(5.0, 0.1 * 2 ** i)
        assert nominal / 2 <= d <= nominal
    b.reset()
    assert b.next_delay() <= 0.1
    assert Backoff(cap=0.05).next_delay() <= 0.05
    assert Backoff(cap=0).cap > 0


def test_backoff_survives_an_outage_of_any_length():
    """2 ** 1024 does not fit a float: the 1025th retry of one outage used to raise OverflowError in
    the loop's error handler, killing the process after ~13 minutes of outage at a 1 s period."""
    b = Backoff(cap=5.0)
    delays = [b.next_delay() for _ in range(2000)]
    assert all(2.5 <= d <= 5.0 for d in delays[10:]), "capped, jittered on the upper half"


def test_outage_logs_once_per_outage(caplog):
    t = [100.0]
    o = Outage("redis://u:pw@127.0.0.1:1/0", logging.getLogger("x"), clock=lambda: t[0])
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            o.failed(ConnectionError("refused"), 5.0)
            t[0] += 1
        o.recovered()
        o.recovered()
        o.failed(ConnectionError("refused again"), 5.0)
        o.recovered()
    msgs = messages(caplog)
    assert len(msgs) == 4
    assert "Redis unavailable at redis://u:***@127.0.0.1:1/0 (refused)" in msgs[0]
    assert "after 10.0s" in msgs[1]
    assert not any("pw@" in m for m in msgs)


def test_startup_waits_for_redis_then_starts(caplog):
    class Unsynced(SyncingClock):
        def __init__(self, start):
            super().__init__(start)
            self.is_synced = False

        @property
        def synced(self):
            return self.is_synced

        def sync(self, client):
            client.time()
            self.is_synced = True
            return self.now_ms()
    clock = Unsynced(at(E0, 0.1))
    c = Recorder(clock)
    c.client.down = 4
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=1) == 0
    assert c.startups == 1 and len(c.steps) == 1 and c.client.time_calls == 5
    msgs = messages(caplog)
    assert sum("Redis unavailable" in m for m in msgs) == 1 and sum("Redis is back" in m for m in msgs) == 1


def test_data_problem_at_startup_is_reported_and_retried(caplog):
    class Picky(Recorder):
        def startup(self):
            self.startups += 1
            if self.startups < 4:
                raise DataProblem("t:strategies is a string, expected a set")
    clock = FakeClock(at(E0, 0.1))
    c = Picky(clock)
    with caplog.at_level(logging.INFO):
        assert c.run(max_epochs=1) == 0
    assert c.startups == 4 and len(c.steps) == 1
    assert sum("t:strategies is a string" in m and "recovered" not in m for m in messages(caplog)) == 1


# -- signals -------------------------------------------------------------------------------------
def test_sigterm_sets_the_stop_flag(monkeypatch, caplog):
    forced = []
    monkeypatch.setattr(comp_mod, "_force_exit", lambda logger: forced.append(logger))
    monkeypatch.setattr(comp_mod, "STOP_GRACE_S", 0.01)
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    try:
        install_signal_handlers(stop, logging.getLogger("redismedian.test"))
        with caplog.at_level(logging.INFO):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    assert any("received SIGTERM, stopping" in m for m in messages(caplog))
    # the watchdog fires (here harmlessly) if the loop does not leave in time
    deadline = threading.Event()
    for _ in range(500):
        if forced:
            break
        deadline.wait(0.01)
    assert forced


def test_the_signal_handler_only_records_the_signal(monkeypatch, caplog):
    """No log line and no thread in the handler (it runs between two bytecodes of the main thread,
    which may hold the locks they take): the watcher thread logs and sets the flag."""
    forced = threading.Event()     # waited for below: the watcher must not outlive the monkeypatch
    monkeypatch.setattr(comp_mod, "_force_exit", lambda logger: forced.set())
    monkeypatch.setattr(comp_mod, "STOP_GRACE_S", 0.01)
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    try:
        install_signal_handlers(stop, logging.getLogger("redismedian.test"))
        handler = signal.getsignal(signal.SIGINT)
        started = []
        with caplog.at_level(logging.INFO):
            with monkeypatch.context() as m:
                m.setattr(threading.Thread, "start", lambda self: started.append(self))
                handler(signal.SIGINT, None)    # called as Python would call it, in the main thread
                assert not started
            assert stop.wait(5) and forced.wait(5)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    [record] = [r for r in caplog.records if "received SIGINT, stopping" in r.getMessage()]
    assert record.threadName == "redismedian-stop", "logged by the watcher, not in the handler"


def test_a_forced_exit_after_a_hung_stop_is_a_failure(monkeypatch, caplog):
    exits = []
    monkeypatch.setattr(comp_mod.os, "_exit", exits.append)
    monkeypatch.setattr(comp_mod.logging, "shutdown", lambda: None)
    with caplog.at_level(logging.WARNING):
        comp_mod._force_exit(logging.getLogger("redismedian.test"))
    assert exits == [EXIT_FAILURE], "a hang is not reported as success"
    assert "clean stop took longer than 1.5s" in messages(caplog)[0]


def test_exit_is_a_fatal_error_with_a_clean_default():
    assert isinstance(Exit("bye"), FatalError) and Exit("bye").code == 0 and FatalError("no").code == EXIT_FAILURE


# -- the period recorded in Redis ---------------------------------------------------------------
def test_a_component_with_another_period_is_refused(env, caplog):
    g = env.generator("g1")
    assert g.run(max_epochs=1) == 0
    assert env.hash(env.k.meta)["period_ms"] == str(env.period_ms)
    other = env.generator("g2", settings=env.settings_for(period_ms=1_800_000))
    with caplog.at_level(logging.ERROR):
        assert other.run(max_epochs=1) == EXIT_FAILURE
    msg = messages(caplog, logging.ERROR)[-1]
    assert "runs with period 3600s" in msg and "started with 1800s" in msg and "'t'" in msg
    assert env.hash(env.k.meta)["period_ms"] == str(env.period_ms)
    assert not env.r.exists(env.k.signal("g2"))


@pytest.mark.parametrize("kind", ["generator", "strategy", "trader"])
def test_every_component_checks_the_period(env, kind, caplog):
    env.r.hset(env.k.meta, mapping={"period_ms": 1_800_000, "instance": "abc"})
    c = {"generator": lambda: env.generator("g1"), "strategy": lambda: env.strategy("X"),
         "trader": lambda: env.trader()}[kind]()
    with caplog.at_level(logging.ERROR):
        assert c.run(max_epochs=1) == EXIT_FAILURE
    assert "runs with period 1800s" in messages(caplog, logging.ERROR)[-1]


def test_period_written_as_a_float_is_the_same_period(env):
    env.r.hset(env.k.meta, mapping={"period_ms": f"{env.period_ms}.0", "instance": "abc"})
    g = env.generator("g1")
    assert g.run(max_epochs=1) == 0
    assert env.hash(env.k.signal("g1"))["status"] == "ok"


# -- names are owned -----------------------------------------------------------------------------
@pytest.fixture
def short(monkeypatch):
    """A 2 s period: the lease TTL is 3 s of fake time, polled every 0.25 s."""
    return Env(monkeypatch, period_ms=2000)


def _renewing(env, key, holder, ttl_ms):
    """Make the clock's waits renew ``key`` for ``holder``, like a live process would."""
    orig = env.clock.wait

    def wait(stop, seconds):
        r = orig(stop, seconds)
        env.r.set(key, holder, px=ttl_ms)
        return r
    env.clock.wait = wait


def test_acquire_a_free_name(short):
    g = short.generator("g1")
    acquire_name(g, g.lease_key, "generator name 'g1'")
    assert short.r.get(g.lease_key).decode() == g.settings.owner
    assert 0 < short.r.pttl(g.lease_key) <= 3000


def test_acquire_is_refused_while_a_live_holder_renews(short):
    g = short.generator("g1")
    short.r.set(g.lease_key, "otherhost:123:abcd", px=3000)
    _renewing(short, g.lease_key, "otherhost:123:abcd", 3000)
    with pytest.raises(FatalError, match="owned by another live process \\(otherhost:123:abcd\\)"):
        acquire_name(g, g.lease_key, "generator name 'g1'")
    assert short.r.get(g.lease_key) == b"otherhost:123:abcd"
    assert sum(short.clock.waits) < 3.0, "a renewal is noticed before the lease could expire"


def test_acquire_is_refused_when_another_process_takes_the_name_meanwhile(short):
    g = short.generator("g1")
    short.r.set(g.lease_key, "dead:1:aaaa", px=1000)
    _renewing(short, g.lease_key, "alive:2:bbbb", 3000)
    with pytest.raises(FatalError, match="alive:2:bbbb"):
        acquire_name(g, g.lease_key, "generator name 'g1'")


def test_acquire_takes_over_after_the_lease_expires(short, caplog):
    g = short.generator("g1")
    short.r.set(g.lease_key, "dead:1:aaaa", px=2500)
    t0 = short.clock.now_ms()
    with caplog.at_level(logging.INFO):
        acquire_name(g, g.lease_key, "generator name 'g1'")
    assert short.r.get(g.lease_key).decode() == g.settings.owner
    waited = short.clock.now_ms() - t0
    assert 2500 <= waited <= 2500 + 300
    msgs = messages(caplog)
    assert any("held by dead:1:aaaa" in m for m in msgs) and any("took over" in m for m in msgs)


def test_a_second_process_with_a_live_name_is_refused_at_start(short, caplog):
    first = short.generator("g1")
    short.started(first)
    second = short.generator("g1")
    _renewing(short, second.lease_key, first.settings.owner, 3000)
    with caplog.at_level(logging.ERROR):
        assert second.run(max_epochs=1) == EXIT_FAILURE
    assert "owned by another live process" in messages(caplog, logging.ERROR)[-1]
    assert short.r.get(first.lease_key).decode() == first.settings.owner, "the refused process left the lease alone"


def test_acquire_stops_when_asked(short):
    g = short.generator("g1")
    short.r.set(g.lease_key, "dead:1:aaaa", px=3000)
    orig = short.clock.wait
    short.clock.wait = lambda stop, s: (g.stop.set(), orig(stop, s))[1]
    with pytest.raises(Exit) as e:
        acquire_name(g, g.lease_key, "generator name 'g1'")
    assert e.value.code == EXIT_FAILURE


@pytest.mark.parametrize("garbage", ["list", "hash", "zset"])
def test_acquire_repairs_a_lease_of_the_wrong_type(short, garbage):
    g = short.generator("g1")
    {"list": lambda: short.r.rpush(g.lease_key, "x"), "hash": lambda: short.r.hset(g.lease_key, "a", "b"),
     "zset": lambda: short.r.zadd(g.lease_key, {"a": 1})}[garbage]()
    acquire_name(g, g.lease_key, "generator name 'g1'")
    assert short.r.get(g.lease_key).decode() == g.settings.owner


def test_acquire_repairs_a_lease_that_never_expires(short):
    """No redismedian process writes a lease without a TTL: it is garbage, not a live holder."""
    g = short.generator("g1")
    short.r.set(g.lease_key, "somebody")
    acquire_name(g, g.lease_key, "generator name 'g1'")
    assert short.r.get(g.lease_key).decode() == g.settings.owner
    assert short.r.pttl(g.lease_key) > 0


@pytest.mark.parametrize("garbage", ["abc", "", "-5", "0", "inf", "nan", "1.5"])
def test_garbage_period_in_meta_is_reported_not_fatal(env, caplog, garbage):
    env.r.hset(env.k.meta, mapping={"period_ms": garbage, "instance": "abc"})
    g = env.generator("g1")
    with caplog.at_level(logging.ERROR):
        assert g.run(max_epochs=2) == 0
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and "t:meta has period_ms" in errors[0] and "fix it or delete t:meta" in errors[0]
    assert env.hash(env.k.meta)["period_ms"] == garbage, "somebody else's record is reported, not overwritten"
    assert not env.r.exists(env.k.signal("g1"))


# -- the deployment record: created when missing, or waited for under the ACL --------------------
def _spy_scripts(c):
    """Record the source of every script ``c`` runs (in order)."""
    ran = []
    orig = c.script

    def script(source):
        ran.append(source)
        return orig(source)
    c.script = script
    return ran


def _deny_meta_create(c, exc):
    """``c``'s Redis user may not create the deployment record (META_CREATE fails with ``exc``)."""
    orig = c.script
    tries = []

    def script(source):
        if source == META_CREATE:
            def refused(keys=(), args=()):
                tries.append(1)
                raise exc
            return refused
        return orig(source)
    c.script = script
    return tries


NOPERM = [
    redis.exceptions.NoPermissionError("this user has no permissions to access one of the keys used as arguments"),
    redis.exceptions.ResponseError("NOPERM User strategy.X has no permissions to run the 'hset' command"),
    redis.exceptions.ResponseError("ERR Error running script (call to f_0): @user_script:12: The user executing the "
                                   "script can't access at least one of the keys mentioned in the command"),
    # Redis 7.2+ and Valkey word a refusal inside a script so:
    redis.exceptions.ResponseError("ACL failure in script: No permissions to access a key script: on @user_script:45."),
]


@pytest.mark.parametrize("kind", ["generator", "strategy"])
def test_a_missing_deployment_record_is_created_then_the_call_goes_on(env, kind):
    """'nometa' -> META_CREATE -> the same script again (without the ACL anybody may create it)."""
    from redismedian.scripts import GENERATOR_PUBLISH, STRATEGY_REPORT
    c = env.generator("g1") if kind == "generator" else env.strategy("X")
    ran = _spy_scripts(c)
    if kind == "generator":
        env.started(c)
        c.step(env.E)
        assert env.hash(env.k.signal("g1"))["epoch"] == str(env.E)
        call = GENERATOR_PUBLISH
    else:
        env.started(c)
        assert env.r.get(env.k.decision("X")).decode().startswith(f"{env.E}|!starting|")
        call = STRATEGY_REPORT
    assert [s for s in ran if s in (call, META_CREATE)] == [call, META_CREATE, call]
    meta = env.hash(env.k.meta)
    assert meta["period_ms"] == str(env.period_ms) and meta["instance"] == c.instance
    assert int(meta["created"]) == env.clock.now_ms()
    assert "recreated" not in meta and "registry" not in meta


@pytest.mark.parametrize("exc", NOPERM)
@pytest.mark.parametrize("kind", ["generator", "strategy"])
def test_a_user_that_may_not_create_the_record_waits_for_it(env, exc, kind):
    c = env.generator("g1") if kind == "generator" else env.strategy("X")
    tries = _deny_meta_create(c, exc)
    with pytest.raises(Waiting) as e:
        if kind == "generator":
            env.started(c)
            c.step(env.E)
        else:
            c.startup()
    assert isinstance(e.value, DataProblem)
    assert str(e.value).startswith("waiting for the deployment record t:meta: ") and "start the trader" in str(e.value)
    assert not env.r.exists(env.k.meta), "nothing created"
    assert not env.r.exists(env.k.signal("g1")) and not env.r.exists(env.k.decision("X")), "nothing written"
    with pytest.raises(Waiting):                    # asked once: later calls wait without asking again
        if kind == "generator":
            c.step(env.E)
        else:
            c.startup()
    assert tries == [1]


def test_another_refusal_to_create_the_record_is_not_waiting(env):
    g = env.started(env.generator("g1"))
    _deny_meta_create(g, redis.exceptions.ResponseError("ERR something else went wrong"))
    with pytest.raises(redis.exceptions.ResponseError, match="something else") as e:
        g.step(env.E)
    assert not isinstance(e.value, Waiting)


def test_a_strategy_waits_at_start_until_the_trader_creates_the_record(env, caplog):
    s = env.strategy("X", ["g1"])
    _deny_meta_create(s, NOPERM[0])
    waits = []
    orig = env.clock.wait

    def wait(stop, seconds):
        waits.append(seconds)
        if len(waits) == 3:
            env.trader().tick(env.E)                    # the trader starts: it creates the record
        return orig(stop, seconds)
    env.clock.wait = wait
    with caplog.at_level(logging.INFO):
        assert s.run(max_epochs=1) == 0
    warnings = messages(caplog, logging.WARNING)
    assert sum("waiting for the deployment record t:meta" in m for m in warnings) == 1, "said once, not per retry"
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert waits[:3] == [1.0, 1.0, 1.0], "retried every second (at most a period)"
    assert any("started X" in m for m in messages(caplog))
    assert env.r.get(env.k.decision("X")).decode().startswith(f"{env.E}|"), "then it runs as usual"
    assert env.asks() == {"X"}


def test_a_generator_waits_for_the_record_period_after_period(env, caplog):
    g = env.generator("g1")
    _deny_meta_create(g, NOPERM[1])
    with caplog.at_level(logging.INFO):
        assert g.run(max_epochs=3) == 0
    warnings = messages(caplog, logging.WARNING)
    assert sum("waiting for the deployment record t:meta" in m for m in warnings) == 1
    assert not env.r.exists(env.k.signal("g1")) and not env.r.exists(env.k.meta)


def test_a_name_owned_by_another_acl_user_is_fatal(env):
    """Under the ACL each strategy has its own user: one started with another's name is refused in one
    line that says which user to use."""
    s = env.strategy("B")
    orig = s.script

    def script(source):
        if source == LEASE_ACQUIRE:
            def refused(keys=(), args=()):
                raise redis.exceptions.NoPermissionError(
                    "this user has no permissions to access one of the keys used as arguments")
            return refused
        return orig(source)
    s.script = script
    s.redis_user = lambda: "strategy.A"
    with pytest.raises(FatalError) as e:
        s.startup()
    assert str(e.value).startswith("Redis user 'strategy.A' may not act as strategy name 'B': under the ACL each "
                                   "strategy runs with its own user (strategy.B)")
    assert e.value.code == EXIT_FAILURE
