"""Owned keys: with any one component's credentials, nothing but its own keys can be changed.

A real redis-server loaded with the ACL that ``redismedian acl`` renders, a real pipeline of
processes (three strategies, so that one hostile vote could move the median), and an attacker
holding one role's password at a time.  The attacker tries a type-appropriate write on every key
of the namespace that is not its own (and on the next epochs' key names), directly, through a
script of its own, and through the project's own scripts called with other names.  What Redis lets
through must be exactly the documented doorbells; and with the attacker ringing those doorbells
as hard as it can, every median stays exact over the honest strategies, nothing is published while
a registered strategy is silent, the registry does not move, and no peer exits.
"""
from __future__ import annotations

import itertools
import secrets
import signal
import statistics
import subprocess
import sys
import time

import pytest
import redis

from redismedian import scripts as S
from redismedian.acl import render_acl
from redismedian.keys import Keys
from tests import plugins
from tests.prod_support import ConfRedis
from tests.support import ROOT, Cluster, harness_client, wait_until

NS = "redismedian"
K = Keys(NS)
GENERATORS = ["g1", "g2", "g3"]
STRATEGIES = {"X": "g1", "Y": "g2", "Z": "g3"}
SIGNAL_OF = {"g1": plugins.sig_a, "g2": plugins.sig_b, "g3": plugins.sig_c}
PERIOD = 0.5

# What a role may still write outside its own keys: (command, key prefix).  Doorbells only: they can
# make the trader look early or late, never change what it publishes (docs/guarantees.md).  (The
# other doorbells, NS:ready and NS:joins, are channels: no key.)
DOORBELLS = {
    "strategy": {("incr", f"{K.prefix}:count:"), ("pexpire", f"{K.prefix}:count:")},
    "generator": set(),
}


def _acl_with_passwords(passwords: dict[str, str]) -> str:
    lines = []
    for line in render_acl(NS, GENERATORS, list(STRATEGIES)).splitlines():
        user = line.split()[1]
        lines.append(line + (f" >{passwords[user]}" if user in passwords else ""))   # after resetpass
    return "\n".join(lines) + "\n"


def _acl_server(tmp_path, users):
    """A redis-server with the rendered ACL and a password per user; a Cluster of component
    processes against it; and env(user) for a process logging in as that user."""
    pw = {u: "pw-" + secrets.token_urlsafe(12) for u in users}
    acl = tmp_path / "users.acl"
    acl.write_text(_acl_with_passwords(pw))
    server = ConfRedis(tmp_path / "redis", admin_password=pw["admin"], extra=["--aclfile", str(acl)]).start()
    c = Cluster(server.url_for(), tmp_path, period=PERIOD, namespace=NS)

    def as_user(user):
        return c.env(REDISMEDIAN_REDIS_URL=server.url_for(user), REDISMEDIAN_PASSWORD=pw[user])
    return server, pw, c, as_user


@pytest.fixture
def world(tmp_path):
    server, pw, c, as_user = _acl_server(tmp_path, ["admin", "operator", "trader",
                                                    *(f"generator.{g}" for g in GENERATORS),
                                                    *(f"strategy.{s}" for s in STRATEGIES)])
    procs = {}
    try:
        # Strategies first: under the ACL they may neither load their scripts on a fresh Redis nor create
        # the deployment record, and wait for the trader (one log line, no exit).
        for s, g in STRATEGIES.items():
            procs[s] = c.strategy(s, g, env=as_user(f"strategy.{s}"))
        procs["X"].wait_for_output(r"waiting for the trader", timeout=15)
        procs["trader"] = c.trader(env=as_user("trader"))
        for g, fn in zip(GENERATORS, ("sig_a", "sig_b", "sig_c")):
            procs[g] = c.generator(g, f"tests.plugins:{fn}", env=as_user(f"generator.{g}"))
        yield server, pw, c, procs, as_user
    finally:
        c.stop_all()
        server.kill()


def _client(server, user, pw, **kw):
    return harness_client(server.port, username=user, password=pw[user], decode_responses=True, **kw)


def _expected(epoch: int) -> float:
    return statistics.median(SIGNAL_OF[g](epoch) for g in STRATEGIES.values())


def _medians(admin) -> list[dict]:
    return [f for _i, f in admin.xrange(K.medians)]


def _assert_exact(admin) -> list[dict]:
    entries = _medians(admin)
    epochs = [int(f["epoch"]) for f in entries]
    assert epochs == sorted(set(epochs)), "an epoch was published twice or out of order"
    for f in entries:
        assert f["members"] == "X,Y,Z", f
        assert float(f["median"]) == _expected(int(f["epoch"])), f
    return entries


def _writes(key: str, names: list[str]):
    """A type-appropriate write of every kind on ``key``: (command, args)."""
    fields = ["value", "epoch", "status", "state", "reason", "period_ms", "instance", "registry", "created",
              "recreated", "median", "count", "members", "published", "fence", "leader", "ts", *names]
    yield "set", (key, "1|1000")
    for f in fields:
        yield "hset", (key, f, "1000")
    for n in names + ["FAKE"]:
        yield "sadd", (key, n)
        yield "srem", (key, n)
        yield "zadd", (key, {n: 1000})
        yield "rpush", (key, n)
    yield "xadd", (key, {"name": "g1", "epoch": "1", "value": "1000", "status": "ok"})
    yield "incr", (key,)
    yield "pexpire", (key, 1)
    yield "del", (key,)


def _is_denial(e: Exception) -> bool:
    """Redis' ACL refusing: NOPERM at the door, or the check of each command inside a script."""
    msg = str(e).lower()   # Redis 7.0's words, and those of Redis 7.2+ and Valkey ("No permissions...", "ACL failure in script")
    return isinstance(e, redis.exceptions.NoPermissionError) or "noperm" in msg or "no permissions" in msg \
        or "can't run this command" in msg or "can't access" in msg or "acl failure in script" in msg


def _attempt(client, cmd, args):
    """('allowed', reply) or ('denied', None); any other error (WRONGTYPE...) means Redis let the user
    reach the key, so it counts as allowed."""
    try:
        reply = getattr(client, "delete" if cmd == "del" else cmd)(*args)
    except redis.exceptions.ResponseError as e:
        if _is_denial(e):
            return "denied", None
        return "allowed", str(e)
    return "allowed", reply


def _attack_surface(admin, epoch: int) -> list[str]:
    """Every key of the namespace now, plus the key names of the next epochs and of everybody."""
    keys = set(admin.scan_iter(match=f"{NS}:*", count=1000))
    for e in range(epoch, epoch + 4):
        keys |= {K.count(e), f"{NS}:ready:{e % 4}"}        # (the doorbell list this replaced)
    for s in [*STRATEGIES, "FAKE"]:
        keys |= {K.decision(s), K.lease("strategy", s)}
    for g in GENERATORS:
        keys |= {K.signal(g), K.signal_feed(g), K.lease("generator", g)}
    keys |= {K.meta, K.strategies, K.registry_backup, K.deregistered, K.joins_channel, K.ready_channel,
             K.trader, K.medians, K.events,
             K.lease("trader"), K.trader_fence, K.settled, K.acted, K.traders, K.acks}
    return sorted(keys)


def _own(role: str, name: str, key: str) -> bool:
    if role == "strategy":
        return key in (K.decision(name), K.lease("strategy", name))
    return key in (K.signal(name), K.signal_feed(name), K.lease("generator", name))


def test_every_role_can_write_only_its_own_keys_and_the_doorbells(world):
    server, pw, c, procs, _as_user = world
    admin = server.client(decode_responses=True)
    wait_until(lambda: len(_medians(admin)) >= 2, 30, what="two medians over X, Y and Z")
    epoch = int(admin.hget(K.trader, "epoch"))
    registry = admin.smembers(K.strategies)
    assert registry == {"X", "Y", "Z"}
    surface = _attack_surface(admin, epoch)
    decisions_seen = set()

    for role, name in [("strategy", "X"), ("generator", "g1")]:
        user = f"{role}.{name}"
        attacker = _client(server, user, pw)
        allowed = set()
        replies = []
        own_script = attacker.register_script("return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))")
        for key in surface:
            if _own(role, name, key):
                continue
            for cmd, args in _writes(key, [*STRATEGIES, *GENERATORS]):
                verdict, reply = _attempt(attacker, cmd, args)
                if verdict == "allowed":
                    allowed.add((cmd, key))
                    replies.append(reply)
                # The same write through a script of the attacker's own (EVALSHA: any user may load one).
                if cmd in ("set", "hset", "sadd", "srem", "rpush", "incr", "pexpire", "del"):
                    flat = [cmd.upper(), *[str(a) for a in args[1:]]]
                    try:
                        replies.append(own_script(keys=[key], args=flat))
                        allowed.add((cmd, key))
                    except redis.exceptions.ResponseError as e:
                        if not _is_denial(e):          # it reached the key (e.g. WRONGTYPE)
                            allowed.add((cmd, key))
            # Direct EVAL is not even a command these users have.
            assert _attempt(attacker, "eval", ("return redis.call('DEL', KEYS[1])", 1, key))[0] == "denied"
        # The doorbell channels: a strategy may publish on exactly those two; a generator on none.
        for channel in (K.ready_channel, K.joins_channel, f"{NS}:medians", f"{NS}:other", "elsewhere"):
            verdict, _reply = _attempt(attacker, "publish", (channel, "1"))
            ok = role == "strategy" and channel in (K.ready_channel, K.joins_channel)
            assert verdict == ("allowed" if ok else "denied"), (user, channel, verdict)
        bells = {(cmd, key) for cmd, key in allowed
                 if any(cmd == c_ and key.startswith(p) for c_, p in DOORBELLS[role])}
        assert allowed == bells, f"{user} could write {sorted(allowed - bells)[:10]}"
        # Nothing the attacker got back reveals another strategy's decision.
        for s in STRATEGIES:
            raw = admin.get(K.decision(s))
            if raw:
                decisions_seen.add(raw.partition("|")[2])
        for reply in replies:
            assert not any(d and d in str(reply) for d in decisions_seen), reply
        assert _attempt(attacker, "get", (K.decision("Y"),))[0] == "denied"
        assert _attempt(attacker, "mget", ([K.decision("Y"), K.decision("Z")],))[0] == "denied"

    # The project's own scripts, called by X with other names' keys: refused before they run.
    x = _client(server, "strategy.X", pw)

    def run_as_x(source, keys, args):
        return x.register_script(source)(keys=keys, args=args)
    meta = S.MetaArgs(int(PERIOD * 1000), "", "fresh", "attacker|0", 750)
    forged = [
        lambda: S.strategy_report(run_as_x, K, meta, name="Y", epoch=epoch + 1, value="1000", state="ok",
                                  reason="", decision_ttl_ms=5000, ready_ttl_ms=1000, start_ms=0),
        lambda: S.registry_admit(run_as_x, K, meta, ["FAKE", "Y"]),
        lambda: S.registry_restore(run_as_x, K, meta, version=0, names=["FAKE"]),
        lambda: S.deregister(run_as_x, K, name="Y"),
        lambda: S.meta_create(run_as_x, Keys("other"), meta),
        lambda: S.trader_settle(run_as_x, K, meta, S.TraderArgs("1", "", 0, 3, 0, -1, ""), epoch=epoch + 1,
                                outcome="ok", text="1000", count=3, members="X,Y,Z", medians_maxlen=10,
                                state_ttl_ms=1500),
        lambda: S.trader_tick(run_as_x, K, meta, S.TraderArgs("", "", 0, 0, 0, -1, ""), epoch=epoch + 1,
                              heartbeat_ttl_ms=1000, state_ttl_ms=1500),
        lambda: S.trader_acted(run_as_x, K, lease_value="attacker|1", epoch=epoch + 1, error="", state_ttl_ms=1500),
        lambda: S.trader_acked(run_as_x, K, lease_value="attacker|1", token="1", epoch=epoch + 1, replicas=9,
                               reason="", maxlen=10, state_ttl_ms=1500),
        lambda: S.trader_restore(run_as_x, K, entries=[(epoch + 1, ("epoch", str(epoch + 1), "median", "7"),
                                                          ("epoch", str(epoch + 1)))], acted=None, from_ms=0,
                                 maxlen=10, epoch=epoch + 1),
        lambda: S.generator_publish(run_as_x, K, meta, name="g1", epoch=epoch + 1, value="1000", status="ok",
                                    error="", signal_ttl_ms=1000, feed_maxlen=10),
        lambda: S.lease_acquire(run_as_x, K.lease("strategy", "Y"), owner="attacker|0", ttl_ms=100_000),
    ]
    for call in forged:
        with pytest.raises(redis.exceptions.ResponseError) as e:
            call()
        assert _is_denial(e.value), str(e.value)
    # The fast report's commands with Y's name: every write to Y's keys refused; its doorbell script
    # (which only counts a registered name for the epoch) is a doorbell X may ring anyway.
    admin.script_load(S.STRATEGY_DOORBELL)   # X may not load it: only run it (acl.scripts)
    fast = S.strategy_tick_request(K, meta, name="Y", epoch=epoch + 1, value="1000", state="ok", reason="",
                                   decision_ttl_ms=5000, ready_ttl_ms=1000, check_meta=False)
    pipe = x.pipeline(transaction=False)
    for cmd in fast.commands:
        pipe.execute_command(*cmd)
    replies = pipe.execute(raise_on_error=False)
    for cmd, reply in zip(fast.commands, replies):
        if cmd[0] != "EVALSHA":
            assert isinstance(reply, Exception) and _is_denial(reply), (cmd[0], reply)
    assert not S.strategy_ticked(fast, replies, meta).ok

    assert admin.smembers(K.strategies) == registry
    assert all(p.alive() for p in procs.values()), "a component exited"
    n = len(_medians(admin))
    wait_until(lambda: len(_medians(admin)) >= n + 2, 10, what="the pipeline going on after the attack")
    _assert_exact(admin)


def test_doorbells_rung_by_a_hostile_strategy_change_no_median(world):
    """X rings every doorbell it may, as hard as it can, while Z is stopped: nothing is published
    while Z is silent, the medians around it are exact, the registry never moves, and the pipeline
    is back within two periods of Z resuming."""
    server, pw, c, procs, _as_user = world
    admin = server.client(decode_responses=True)
    wait_until(lambda: len(_medians(admin)) >= 2, 30, what="two medians over X, Y and Z")
    x = _client(server, "strategy.X", pw)
    period_ms = int(PERIOD * 1000)

    def ring():
        now = int(x.time()[0]) * 1000 + int(x.time()[1]) // 1000
        e = now // period_ms
        pipe = x.pipeline(transaction=False)
        for ep in range(e, e + 3):
            for _ in range(3):
                pipe.execute_command("INCR", K.count(ep))
            pipe.publish(K.ready_channel, str(ep))
            pipe.pexpire(K.count(ep + 1), 1)
        for name in ("FAKE", "Y", "Z", "X"):
            pipe.publish(K.joins_channel, name)
        pipe.execute()

    def server_s():
        sec, usec = admin.time()
        return sec + usec / 1e6

    procs["Z"].signal(signal.SIGSTOP)
    try:
        stopped_epoch = int(server_s() * 1000) // period_ms   # Z may have submitted this one already
        # Wait until the trader says Z is missing, ringing all the while.
        wait_until(lambda: (ring(), admin.hget(K.trader, "state") == "error"
                            and "Z" in (admin.hget(K.trader, "reason") or ""))[1], 10,
                   interval=0.05, what="the trader in error naming Z")
        for _ in itertools.repeat(None, 20):     # about 4 more periods of ringing while Z is silent
            ring()
            time.sleep(PERIOD / 5)               # pacing only: the assertion below reads what happened
        silent = [f for f in _medians(admin) if int(f["epoch"]) > stopped_epoch]
        assert silent == [], f"published while Z was silent: {silent}"
    finally:
        procs["Z"].signal(signal.SIGCONT)
    resumed = len(_medians(admin))
    t0 = server_s()
    wait_until(lambda: (ring(), len(_medians(admin)) > resumed)[1], 4 * PERIOD + 2, interval=0.05,
               what="a median again after Z resumed")
    back_in = (server_s() - t0) / PERIOD
    # The promise is two periods (docs/guarantees.md); one more of slack for a loaded 2-core machine.
    assert back_in <= 3, f"back after {back_in:.2f} periods"
    _assert_exact(admin)
    assert admin.smembers(K.strategies) == {"X", "Y", "Z"}
    assert admin.hgetall(K.deregistered) == {}
    assert all(p.alive() for p in procs.values()), "a component exited"


def test_a_strategy_run_under_a_peers_name_with_its_own_credentials_is_refused(world):
    server, pw, c, procs, as_user = world
    admin = server.client(decode_responses=True)
    wait_until(lambda: len(_medians(admin)) >= 1, 30, what="a median over X, Y and Z")
    impostor = c.start("strategy", "--name", "Y", "--signals", "g1", name="impostor", env=as_user("strategy.X"))
    assert impostor.wait(15) == 1
    out = impostor.output()
    assert "may not act as strategy name 'Y'" in out and "strategy.Y" in out and "Traceback" not in out, out
    n = len(_medians(admin))
    wait_until(lambda: len(_medians(admin)) >= n + 2, 10, what="medians going on")
    _assert_exact(admin)
    assert procs["Y"].alive()


def test_a_generator_or_strategy_started_before_any_trader_waits_for_the_deployment_record(tmp_path):
    server, _pw, c, as_user = _acl_server(tmp_path, ["admin", "trader", "generator.g1", "strategy.X"])
    try:
        g = c.generator("g1", "tests.plugins:sig_a", env=as_user("generator.g1"))
        x = c.strategy("X", "g1", env=as_user("strategy.X"))
        admin = server.client(decode_responses=True)
        # A fresh Redis holds no scripts, and these users may not load them (nor run any of their choosing):
        # they wait for the trader, one log line each, still running.
        for p in (g, x):
            p.wait_for_output(r"waiting for the trader to load this (generator|strategy)'s scripts", timeout=15)
        time.sleep(3 * PERIOD)
        for p in (g, x):
            assert p.alive()
            assert p.output().count("waiting for the trader to load") == 1, p.output()
        # Scripts loaded (by the admin here): next they wait for the deployment record, which only the
        # trader or the operator creates.
        S.load_scripts(admin)
        for p in (g, x):
            p.wait_for_output(r"waiting for the deployment record", timeout=15)
        assert not admin.exists(K.meta), "only the trader or the operator creates the deployment record"
        time.sleep(3 * PERIOD)   # three periods of waiting: still one log line each, still running
        for p in (g, x):
            assert p.alive()
            assert p.output().count("waiting for the deployment record") == 1, p.output()
        c.trader(env=as_user("trader"))
        wait_until(lambda: [f for _i, f in admin.xrange(K.medians) if f["members"] == "X"], 20,
                   what="a median of X once the trader created the record")
        for f in _medians(admin):
            assert float(f["median"]) == plugins.sig_a(int(f["epoch"]))
    finally:
        c.stop_all()
        server.kill()


def _cli(c, args, **env):
    return subprocess.run([sys.executable, "-m", "redismedian", *args], env=c.env(**env), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=30)
