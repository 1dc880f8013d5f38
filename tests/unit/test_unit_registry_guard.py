"""The registry guard (scripts.PRELUDE ``registry_guard``): an SREM is a deregistration whatever the
trader's state, and a registry lost with Redis's data is restored (docs/guarantees.md,
"Registrations").

SREM of the last name deletes the key, exactly like DEL or an eviction.  What tells the data loss
apart is the deployment record's registry version (``NS:meta`` field ``registry``): every change of
the backup writes it, an SREM leaves it, and a data loss takes it with the record.  The caller's
memory plays no part: a trader that starts fresh decides exactly as one that ran all along.
"""
import logging

import pytest

from redismedian.component import Exit
from redismedian.scripts import PRELUDE, MetaArgs, registry_admit
from tests.unit_support import Env, messages

# The guard on its own: KEYS meta, registry, backup, deregistered; ARGV now.
GUARD = PRELUDE + r"""
local ver, nb, note = registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]))
return {ver, nb, note}
"""
NOW = 1_700_000_000_000


def state(env):
    def names(key):
        return {n.decode() for n in env.r.smembers(key)}
    return names(env.k.strategies), names(env.k.registry_backup), set(env.hash(env.k.deregistered))


def run_guard(env):
    k = env.k
    ver, nb, note = env.r.eval(GUARD, 4, k.meta, k.strategies, k.registry_backup, k.deregistered, NOW)
    return int(ver), int(nb), note.decode() if isinstance(note, bytes) else note


# (registry, backup, the record's registry version) -> (registry, backup, recorded) after the guard
CASES = [
    # SREM of the last name (the key is gone, the record keeps its version): a deregistration
    ((), ("X",), "3", (set(), set(), {"X"})),
    # a vanished registry of two or more names (DEL, eviction, expiry): restored
    ((), ("X", "Y"), "3", ({"X", "Y"}, {"X", "Y"}, set())),
    # the record lost its version too (Redis lost its data, the record was deleted): restored
    ((), ("X",), None, ({"X"}, {"X"}, set())),
    ((), ("X", "Y"), None, ({"X", "Y"}, {"X", "Y"}, set())),
    # an SREM that left other names: the removed one is recorded
    (("X",), ("X", "Y"), "3", ({"X"}, {"X"}, {"Y"})),
    # nothing changed, or nothing to look at
    (("X", "Y"), ("X", "Y"), "3", ({"X", "Y"}, {"X", "Y"}, set())),
    ((), (), "3", (set(), set(), set())),
    ((), (), None, (set(), set(), set())),
]


@pytest.mark.parametrize("registry,backup,version,after", CASES)
def test_the_guard_tells_an_srem_from_a_loss(env, registry, backup, version, after):
    env.r.hset(env.k.meta, mapping={"period_ms": env.period_ms, "instance": "i1"})
    if version is not None:
        env.r.hset(env.k.meta, "registry", version)
    if registry:
        env.r.sadd(env.k.strategies, *registry)
    if backup:
        env.r.sadd(env.k.registry_backup, *backup)
    ver, nb, note = run_guard(env)
    assert state(env) == after
    assert nb == len(after[1])
    recorded, restored = bool(after[2]), bool(after[0]) and not registry
    if recorded:
        assert env.r.hget(env.k.deregistered, next(iter(after[2]))) == str(NOW).encode()
    assert ("had vanished: restored" in note) is restored, note
    if recorded or (restored and version is None):
        assert ver == int(version or 0) + 1, "the version moves: every trader reads the registry again"
    else:
        assert ver == int(version or 0)
    # after a restore, the record carries the version again: the next SREM of the last name is one
    if backup and not registry:
        assert env.r.hexists(env.k.meta, "registry")


def test_the_guard_on_a_record_that_is_not_a_hash_restores(env):
    """No version to read (the record is garbage: every other script refuses to go on): a vanished
    registry is restored, never taken as a deregistration."""
    env.r.set(env.k.meta, "garbage")
    env.r.sadd(env.k.registry_backup, "X")
    env.r.eval(PRELUDE + "registry_guard(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 1) return 1", 4,
               env.k.meta, env.k.strategies, env.k.registry_backup, env.k.deregistered)
    assert state(env) == ({"X"}, {"X"}, set())


# -- the two orders, with the components ------------------------------------------------------------
def running(env, *names):
    """A trader that admitted ``names`` (live strategies) and published once; returns the trader
    and the strategies."""
    strategies = {n: env.started(env.strategy(n, [f"sig_{n}"])) for n in names}
    t = env.trader()
    env.publish(env.E, **{f"sig_{n}": 1.0 + i for i, n in enumerate(names)})
    for s in strategies.values():
        s.step(env.E)
    t.step(env.E)
    assert [m["members"] for m in env.medians()] == [",".join(sorted(names))]
    return t, strategies


def next_epoch(env, strategies, e):
    env.at(e)
    env.publish(e, **{f"sig_{n}": 1.0 for n in strategies})


def test_srem_of_the_last_strategy_while_no_trader_runs_stays_a_deregistration(env, caplog):
    """The issue's case: the trader stops, the operator removes the last name, a trader starts fresh
    (it remembers no deployment instance): the vanished registry is X's deregistration, not a loss."""
    t, s = running(env, "X")
    t.shutdown()
    env.r.srem(env.k.strategies, "X")                        # `redis-cli SREM t:strategies X`
    e = env.E + 1
    next_epoch(env, s, e)
    s["X"].step(e)                                            # no record yet: X asks to be registered
    assert s["X"].registered is False and env.asks() == {"X"}
    fresh = env.trader()
    with caplog.at_level(logging.INFO):
        fresh.step(e)
    assert state(env) == (set(), set(), {"X"})
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"]) == ("idle", "no strategies registered")
    assert not any("restored" in m for m in messages(caplog))
    with pytest.raises(Exit) as exc:                          # X's next report: it exits 0
        s["X"].step(e)
    assert exc.value.code == 0
    for later in (e + 1, e + 2):                              # and it stays out
        env.at(later)
        fresh.step(later)
        assert state(env)[:2] == (set(), set()) and env.hash(env.k.trader)["state"] == "idle"


def test_srem_of_the_last_strategy_under_a_running_trader_is_a_deregistration(env, caplog):
    t, s = running(env, "X", "Y")
    env.r.srem(env.k.strategies, "Y")                        # one name left
    e = env.E + 1
    next_epoch(env, s, e)
    s["X"].step(e)
    with caplog.at_level(logging.INFO):
        t.step(e)
    assert [m["members"] for m in env.medians()][-1] == "X"  # the median over the one left
    env.r.srem(env.k.strategies, "X")                        # and the last one
    next_epoch(env, s, e + 1)
    with caplog.at_level(logging.INFO):
        t.step(e + 1)
    assert state(env) == (set(), set(), {"X", "Y"})
    assert env.hash(env.k.trader)["state"] == "idle"
    assert "deregistered: X" in messages(caplog) and not any("restored" in m for m in messages(caplog))
    for name in ("X", "Y"):
        with pytest.raises(Exit):
            s[name].step(e + 1)


@pytest.mark.parametrize("known", ["", "i-other"])
def test_what_the_caller_remembers_does_not_change_the_verdict(env, known):
    """The guard in REGISTRY_ADMIT, called by a trader that remembers no deployment instance ('')
    or another one: an SREM of the last name is its deregistration all the same."""
    running(env, "X")
    env.r.srem(env.k.strategies, "X")
    t = env.trader()
    m = t.meta_args()
    r = registry_admit(t.run_script, env.k, MetaArgs(m.period_ms, known, m.fresh_instance, m.owner,
                                                     m.lease_ttl_ms), [])
    assert r.backup_size == 0 and state(env) == (set(), set(), {"X"})


def test_data_loss_restores_for_a_running_trader(env):
    t, s = running(env, "X")
    env.r.flushall()                                          # Redis lost everything
    e = env.E + 1
    next_epoch(env, s, e)
    t.step(e)                                                 # from its memory
    assert state(env) == ({"X"}, {"X"}, set())


@pytest.mark.parametrize("fresh", [False, True])
def test_a_record_lost_with_the_registry_is_a_data_loss(env, fresh):
    """The deployment record and the registry gone, the backup left (an eviction, or both deleted
    by hand): whichever trader looks restores the name; and the record carries the registry version
    again, so that an SREM of the last name afterwards is a deregistration."""
    t, s = running(env, "X")
    env.r.delete(env.k.meta, env.k.strategies)
    e = env.E + 1
    next_epoch(env, s, e)
    s["X"].step(e)                                            # waits for the record, or asks back
    if fresh:
        t.shutdown()
        t = env.trader()
    t.step(e)
    assert state(env) == ({"X"}, {"X"}, set())
    assert "registry" in env.hash(env.k.meta)
    s["X"].step(e)
    assert s["X"].registered is True                          # nobody exits
    env.r.srem(env.k.strategies, "X")
    env.at(e + 1)
    t.step(e + 1)
    assert state(env) == (set(), set(), {"X"})


def test_a_trader_restarted_after_redis_lost_its_data_admits_the_live_strategy(env):
    """Redis restarted empty and the trader restarted too (no memory, no backup): the live strategy
    asks again and is admitted; nothing is taken as a deregistration."""
    t, s = running(env, "X")
    t.shutdown()
    env.r.flushall()
    e = env.E + 1
    next_epoch(env, s, e)
    fresh = env.trader()
    fresh.step(e)                                             # the trader creates the record first
    s["X"].step(e)                                            # X asks to be registered again
    env.at(e + 1)
    fresh.step(e + 1)
    assert state(env) == ({"X"}, {"X"}, set())


def test_redismedian_deregister_of_the_last_name_while_no_trader_runs(env):
    from redismedian.scripts import deregister
    t, s = running(env, "X")
    t.shutdown()
    r = deregister(env.r.eval and (lambda src, keys, args: env.r.eval(src, len(keys), *keys, *args)), env.k,
                   name="X")
    assert r.removed and state(env) == (set(), set(), {"X"})
    fresh = env.trader()
    env.at(env.E + 1)
    fresh.step(env.E + 1)
    assert state(env) == (set(), set(), {"X"}) and env.hash(env.k.trader)["state"] == "idle"


def test_env_unused_guard():
    assert Env  # (the harness is imported for the fixture's type)
