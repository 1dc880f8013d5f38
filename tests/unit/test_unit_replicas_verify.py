"""--min-replicas (a median counts once N replicas hold it) and `redismedian verify` (every median
recomputed from the inputs recorded with it), on fakeredis: WAIT is replaced at its one I/O boundary
(Trader.wait_replicas), the decision around it is the trader's own."""
import pytest
import redis
from click.testing import CliRunner

from redismedian import cli as cli_mod
from redismedian.acl import render_acl
from redismedian.common import FatalError
from redismedian.connection import server_version
from redismedian.following import parse_event
from redismedian.ops import check_deployment
from redismedian.status import gather, render
from redismedian.trader import inputs_text, replicas_verdict
from redismedian.verifying import check_entry, verify
from tests.unit.test_unit_trader import submit
from tests.unit_support import Env, messages


def events(env):
    return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in env.r.xrange(env.k.events)]


def acks(env):
    return [{k.decode(): v.decode() for k, v in f.items()} for _id, f in env.r.xrange(env.k.acks)]


# -- the pure decisions ------------------------------------------------------------------------------
def test_replicas_verdict_names_the_replicas():
    assert replicas_verdict(7, 2, 2, 3) == ""
    assert replicas_verdict(7, 3, 2, 3) == ""
    assert replicas_verdict(7, 1, 2, 120) == ("1 of 2 replicas acknowledged the median of epoch 7 within 120 ms; "
                                              "--min-replicas 2 needs 2; not acted on")
    assert replicas_verdict(7, 0, 1, 500).startswith("0 of 1 replica acknowledged the median of epoch 7 within 500 ms")
    assert "WAIT failed: NOPERM" in replicas_verdict(7, 5, 1, 0, "NOPERM")


def test_inputs_text_keeps_each_decision_as_written():
    assert inputs_text([b"5|1.5", b"5|-2e3", b"5|0"]) == "1.5,-2e3,0"
    assert inputs_text([b"5|1.5", None]) is None
    assert inputs_text([b"garbage"]) is None
    # The fast path gives what the general one gives, and falls back on anything unusual.
    for raw in ([b"5|1.5", b"5|-2e3", b"5|0"], [b"5|1", b"6|2"], [b"5|1|2"], [b"5|1,2"], [b"5|1", None], []):
        assert inputs_text(raw, 5) == inputs_text(raw), raw


# -- --min-replicas ----------------------------------------------------------------------------------
def run_epoch(env, t, epoch, **values):
    submit(env, epoch, **values)
    env.at(epoch)
    t.step(epoch)


def acked_trader(env, **kw):
    """A trader with --min-replicas 1 whose WAIT always finds the replica (its one I/O boundary)."""
    t = env.trader(min_replicas=1, **kw)
    t.wait_replicas = lambda n, timeout_ms: 1
    return t


def test_the_takeover_epoch_is_not_published(monkeypatch):
    # A leader published E-1, then lost its lease (as at a failover that lost its last writes): a trader
    # with --min-replicas taking the lead in E does not publish E (the old leader may have), but E+1.
    env = Env(monkeypatch)
    old = env.trader()
    run_epoch(env, old, env.E - 1, A=1.0)
    env.r.delete(env.k.lease("trader"))
    t = acked_trader(env)
    run_epoch(env, t, env.E, A=1.0)
    assert t.token and "took the lead in this epoch" in t.missed.reason
    assert [m["epoch"] for m in env.medians()] == [str(env.E - 1)]
    run_epoch(env, t, env.E + 1, A=1.0)
    assert [m["epoch"] for m in env.medians()] == [str(env.E - 1), str(env.E + 1)]
    missed = [e for e in events(env) if e["status"] == "missed"]
    assert [(e["epoch"], e["last"]) for e in missed] == [(str(env.E), str(env.E))]
    assert "previous leader may have published it" in missed[0]["reason"]
    # Without --min-replicas (today's behaviour), a takeover publishes its epoch.
    env.r.delete(env.k.lease("trader"))
    t0 = env.trader()
    run_epoch(env, t0, env.E + 2, A=1.0)
    assert env.medians()[-1]["epoch"] == str(env.E + 2)


def test_acknowledged_medians_are_acted_on_unacknowledged_never(monkeypatch, caplog):
    env = Env(monkeypatch)
    acted = []
    waits = []
    replicas = {"n": 1}
    t = env.trader(on_median=lambda e, m, f: acted.append((e, m)), min_replicas=1)

    def wait(n, timeout_ms):
        waits.append((n, timeout_ms))
        return replicas["n"]
    t.wait_replicas = wait
    E = env.E
    run_epoch(env, t, E, A=1.0, B=3.0)
    assert acted == [(E, 2.0)]
    assert waits[0][0] == 1 and 0 < waits[0][1] <= env.period_ms, "bounded by what is left of the period"
    assert [a["epoch"] for a in acks(env)] == [str(E)]
    assert env.hash(env.k.trader)["state"] == "ok"

    replicas["n"] = 0                    # the replica stopped answering
    run_epoch(env, t, E + 1, A=5.0, B=7.0)
    run_epoch(env, t, E + 2, A=1.0, B=1.0)
    assert acted == [(E, 2.0)], "a median no replica acknowledged is never acted on"
    h = env.hash(env.k.trader)
    assert h["state"] == "error"
    assert h["reason"].startswith(f"0 of 1 replica acknowledged the median of epoch {E + 2} within ")
    assert "--min-replicas 1 needs 1" in h["reason"]
    gaps = [e for e in events(env) if e["status"] == "unacknowledged"]
    assert [g["epoch"] for g in gaps] == [str(E + 1), str(E + 2)] and "replica" in gaps[0]["reason"]
    assert [m["epoch"] for m in env.medians()] == [str(E), str(E + 1), str(E + 2)], "written, not published"
    assert any("not published" in m for m in messages(caplog))
    # follow (and the page) read the gap as an epoch that was not published.
    (gap_id, gap_fields), = [x for x in env.r.xrange(env.k.events) if x[1][b"status"] == b"unacknowledged"][:1]
    ev = parse_event(gap_id, gap_fields)
    assert ev is not None and (ev.status, ev.epoch) == ("unacknowledged", E + 1)

    replicas["n"] = 1                    # back
    run_epoch(env, t, E + 3, A=2.0, B=2.0)
    assert acted == [(E, 2.0), (E + 3, 2.0)], "back to acting, skipping the unacknowledged epochs"
    h = env.hash(env.k.trader)
    assert (h["state"], h["reason"], h["acked"]) == ("ok", "", str(E + 3))


def test_while_replicas_lag_a_new_median_does_not_show_ok(monkeypatch):
    env = Env(monkeypatch)
    t = env.trader(min_replicas=2)
    seen_states = []

    def wait(n, timeout_ms):
        seen_states.append(env.hash(env.k.trader)["state"])   # what a reader sees during the WAIT
        return 1
    t.wait_replicas = wait
    run_epoch(env, t, env.E, A=1.0)
    run_epoch(env, t, env.E + 1, A=1.0)
    assert seen_states == ["ok", "error"], "once in error for the replicas, a median alone does not make it ok"
    assert "1 of 2 replicas" in env.hash(env.k.trader)["reason"]


def test_without_min_replicas_no_wait_is_sent(monkeypatch):
    env = Env(monkeypatch)
    t = env.trader()
    t.wait_replicas = lambda n, timeout_ms: pytest.fail("WAIT sent with --min-replicas 0")
    run_epoch(env, t, env.E, A=1.0, B=2.0)
    assert env.medians()[0]["median"] == "1.5" and not env.r.exists(env.k.acks)


# -- --wait-aof (WAITAOF 1 N instead of WAIT N) ------------------------------------------------------
def test_replicas_verdict_under_waitaof_names_the_master_and_the_replicas():
    assert replicas_verdict(7, 1, 1, 3, local=1) == ""
    assert replicas_verdict(7, 0, 0, 3, local=1) == "", "--wait-aof alone: the master's file is enough"
    assert replicas_verdict(7, 0, 1, 120, local=1) == (
        "the median of epoch 7 on disk (WAITAOF) within 120 ms: the master, 0 of 1 replica; "
        "--wait-aof --min-replicas 1 needs the master and 1; not acted on")
    assert replicas_verdict(7, 2, 2, 900, local=0) == (
        "the median of epoch 7 on disk (WAITAOF) within 900 ms: not the master, 2 of 2 replicas; "
        "--wait-aof --min-replicas 2 needs the master and 2; not acted on")
    assert replicas_verdict(7, 0, 0, 900, local=0) == (
        "the median of epoch 7 on disk (WAITAOF) within 900 ms: not the master; --wait-aof needs the master; "
        "not acted on")
    assert "(WAITAOF failed: ERR WAITAOF cannot be used" in replicas_verdict(
        7, 0, 0, 1, "ERR WAITAOF cannot be used when numlocal is set but appendonly is disabled.", local=0)


@pytest.mark.parametrize("min_replicas", [0, 2])
def test_wait_aof_acts_only_on_medians_on_disk(monkeypatch, min_replicas):
    env = Env(monkeypatch)
    acted = []
    calls = []
    disk = {"local": 1, "replicas": min_replicas}
    t = env.trader(on_median=lambda e, m, f: acted.append(e), min_replicas=min_replicas, wait_aof=True)
    t.wait_replicas = lambda n, timeout_ms: pytest.fail("WAIT sent under --wait-aof")

    def fsynced(n, timeout_ms):
        calls.append((n, timeout_ms))
        return disk["local"], disk["replicas"]
    t.wait_fsynced = fsynced
    E = env.E
    run_epoch(env, t, E, A=1.0)
    assert acted == [E] and calls[0][0] == min_replicas and 0 < calls[0][1] <= env.period_ms
    (a,) = acks(env)
    assert (a["epoch"], a["aof"], a["replicas"]) == (str(E), "1", str(min_replicas)), "the ack says: on disk"
    disk["local"] = 0                    # the master's fsync is late (or its disk is stuck)
    run_epoch(env, t, E + 1, A=1.0)
    assert acted == [E], "a median not on the master's disk is never acted on"
    h = env.hash(env.k.trader)
    assert h["state"] == "error" and f"the median of epoch {E + 1} on disk (WAITAOF)" in h["reason"]
    assert "not the master" in h["reason"]
    assert [g["epoch"] for g in events(env) if g["status"] == "unacknowledged"] == [str(E + 1)]
    disk["local"] = 1
    run_epoch(env, t, E + 2, A=1.0)
    assert acted == [E, E + 2] and env.hash(env.k.trader)["state"] == "ok"


def test_without_wait_aof_the_ack_has_no_aof_field(monkeypatch):
    env = Env(monkeypatch)
    t = acked_trader(env)
    t.wait_fsynced = lambda n, timeout_ms: pytest.fail("WAITAOF sent without --wait-aof")
    run_epoch(env, t, env.E, A=1.0)
    (a,) = acks(env)
    assert "aof" not in a and a["replicas"] == "1"


class _Refusing:
    """A client whose WAITAOF fails with ``error`` and whose HELLO names ``server`` ``version``."""

    def __init__(self, error, server=b"redis", version=b"7.0.15"):
        self.error, self.hello = error, [b"server", server, b"version", version, b"proto", 2]

    def execute_command(self, *args):
        if args[0] == "HELLO":
            return self.hello
        assert args == ("WAITAOF", 1, 0, 1), "the probe waits 1 ms at most"
        if self.error:
            raise self.error
        return [1, 0]


@pytest.mark.parametrize("error, says", [
    (redis.exceptions.ResponseError("unknown command 'WAITAOF', with args beginning with: '1' '0' '1'"),
     "--wait-aof needs WAITAOF, which Redis 7.0.15 does not have: use Redis 7.2 or later, or Valkey, or run "
     "without --wait-aof"),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'waitaof' command"),
     "--wait-aof: this trader's Redis user may not send WAITAOF; give it +waitaof (`redismedian acl --wait-aof` "
     "renders the trader user with it), or run without --wait-aof"),
    (redis.exceptions.ResponseError("WAITAOF cannot be used when numlocal is set but appendonly is disabled."),
     "--wait-aof needs the append-only file on the master (appendonly yes): WAITAOF refused: WAITAOF cannot be "
     "used when numlocal is set but appendonly is disabled."),
])
def test_wait_aof_is_refused_at_start_in_one_line(monkeypatch, error, says):
    env = Env(monkeypatch)
    t = env.trader(wait_aof=True)
    t.client = _Refusing(error)
    with pytest.raises(FatalError) as e:
        t.check_wait_aof()
    assert str(e.value) == says
    t.client = _Refusing(None)
    t.check_wait_aof()                   # a server with WAITAOF and an AOF: nothing to say


def test_server_version_names_valkey_and_survives_odd_replies():
    assert server_version(_Refusing(None, b"valkey", b"9.1.2")) == "Valkey 9.1.2"
    assert server_version(_Refusing(None, b"redis", b"7.0.15")) == "Redis 7.0.15"
    odd = _Refusing(None)
    odd.hello = {b"server": b"redis\x1b[31m", b"version": b"7"}
    assert "\x1b" not in server_version(odd)
    odd.hello = [b"proto", 2]
    assert server_version(odd) == "the server (version unknown)"


def test_acl_wait_aof_grants_waitaof_to_the_trader_only():
    plain = render_acl("t", ["g1"], ["X"])
    with_aof = render_acl("t", ["g1"], ["X"], wait_aof=True)
    assert "waitaof" not in plain, "the shipped file loads on Redis 7.0, which knows no WAITAOF"
    changed = [(a, b) for a, b in zip(plain.splitlines(), with_aof.splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("user trader ")
    before, after = changed[0][0].split(), changed[0][1].split()
    assert [w for w in after if w != "+waitaof"] == before and after.count("+waitaof") == 1, "only +waitaof added"
    r = CliRunner().invoke(cli_mod.cli, ["acl", "--generators", "g1", "--strategies", "X", "--namespace", "t",
                                         "--wait-aof"])
    assert r.exit_code == 0 and r.output == with_aof


# -- inputs and verify -------------------------------------------------------------------------------
def test_each_median_records_its_inputs_and_verify_holds(monkeypatch, caplog):
    env = Env(monkeypatch)
    t = env.trader()
    run_epoch(env, t, env.E, B=3.0, A=1.0, C=2.5)
    assert not [m for m in messages(caplog) if "recorded inputs" in m], "a small history: nothing to say"
    (m,) = env.medians()
    assert m["inputs"] == "1.0,3.0,2.5", "the decisions in the members' order"
    assert check_entry(m) == (env.E, "")
    assert verify(env.r, env.k) == (1, [])
    assert verify(env.r, env.k, since=env.E + 1) == (0, [])


def test_an_inputs_history_that_would_outgrow_the_memory_is_said_once(monkeypatch, caplog):
    """Recorded inputs cost about 20 bytes per strategy per epoch: over --medians-maxlen epochs that can
    pass the shipped maxmemory.  The trader says so once, with the figures, and goes on recording."""
    env = Env(monkeypatch)
    t = env.trader(medians_maxlen=200_000_000)
    for e in (env.E, env.E + 1):
        run_epoch(env, t, e, A=1.0, B=2.0)
    said = [m for m in messages(caplog) if "recorded inputs" in m]
    assert len(said) == 1 and "--medians-maxlen 200000000" in said[0] and "--no-record-inputs" in said[0], said
    assert all(m.get("inputs") for m in env.medians())


def test_no_record_inputs(monkeypatch):
    env = Env(monkeypatch)
    run_epoch(env, env.trader(record_inputs=False), env.E, A=1.0)
    assert "inputs" not in env.medians()[0]
    assert verify(env.r, env.k) == (1, [(str(env.E), "no recorded inputs")])


@pytest.mark.parametrize("field,value,why", [
    ("median", "2.0", "published median '2.0', its inputs give 2.5"),
    ("inputs", "1.0,3.0,2.6", "published median '2.5', its inputs give 2.6"),
    ("inputs", "1.0,3.0", "2 inputs recorded for a count of '3'"),
    ("inputs", "1.0,nan,2.5", "input 2 'nan' is not a finite number"),
    ("count", "4", "3 inputs recorded for a count of '4'"),
    ("members", "A,B", "2 members named for 3 inputs"),
])
def test_a_forged_median_or_input_does_not_hold(monkeypatch, field, value, why):
    env = Env(monkeypatch)
    t = env.trader()
    run_epoch(env, t, env.E, A=1.0, B=3.0, C=2.5)
    run_epoch(env, t, env.E + 1, A=1.0, B=3.0, C=2.5)
    (_id1, f1), (id2, f2) = env.r.xrange(env.k.medians)
    forged = {k.decode(): v.decode() for k, v in f2.items()}
    forged[field] = value
    env.r.xdel(env.k.medians, id2)
    env.r.xadd(env.k.medians, forged)
    assert verify(env.r, env.k) == (2, [(str(env.E + 1), why)])
    runner = CliRunner()
    monkeypatch.setattr(cli_mod, "_operator_client", lambda url, ns: env.r)
    r = runner.invoke(cli_mod.cli, ["verify", "--namespace", "t"])
    assert r.exit_code == 1, r.output
    assert f"epoch {env.E + 1}: does not hold: {why}" in r.output
    assert "1 of 2 medians do not hold" in r.output and f"epoch {env.E}:" not in r.output
    r = runner.invoke(cli_mod.cli, ["verify", "--namespace", "t", "--since", str(env.E + 2)])
    assert (r.exit_code, r.output.strip()) == (0, "0 medians checked: all hold")


# -- acknowledged medians a failover lost: written back ----------------------------------------------
def _entries(env, key):
    return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in env.r.xrange(key)]


def _lose_after(env, epoch):
    """What a failover to a replica that was behind leaves: the streams, NS:acted and NS:trader:settled
    as they were after ``epoch`` (the later medians and acknowledgements were never replicated to it)."""
    for key in (env.k.medians, env.k.acks):
        for entry_id, f in _entries(env, key):
            if int(f["epoch"]) > epoch:
                env.r.xdel(key, entry_id)
    env.r.set(env.k.acted, epoch)
    env.r.set(env.k.settled, epoch)


def _published_then_lost(env):
    """A trader that published and saw acknowledged E and E + 1, then a failover that kept only E."""
    t = acked_trader(env)
    run_epoch(env, t, env.E, A=1.0)
    run_epoch(env, t, env.E + 1, A=2.0)
    _lose_after(env, env.E)
    return t, env.E


def test_acknowledged_medians_a_failover_lost_are_written_back_and_not_acted_on_again(monkeypatch, caplog):
    env = Env(monkeypatch)
    acted = []
    t = acked_trader(env, on_median=lambda e, m, f: acted.append((e, m)))
    E = env.E
    for i, (a, b) in enumerate([(1.0, 3.0), (2.0, 5.0), (4.0, 4.5)]):
        run_epoch(env, t, E + i, A=a, B=b)
    before = {f["epoch"]: f for _id, f in _entries(env, env.k.medians)}
    acks_before = {f["epoch"]: f for _id, f in _entries(env, env.k.acks)}
    assert acted == [(E, 2.0), (E + 1, 3.5), (E + 2, 4.25)]
    _lose_after(env, E)
    assert [f["epoch"] for _i, f in _entries(env, env.k.medians)] == [str(E)]

    run_epoch(env, t, E + 3, A=1.0, B=1.0)
    medians = [f for _id, f in _entries(env, env.k.medians)]
    assert [m["epoch"] for m in medians] == [str(E + i) for i in range(4)], "written back before the next one"
    for m in medians[1:3]:
        restored = m.pop("restored")
        assert int(restored) >= int(m["ts"]) and m == before[m["epoch"]], "as it was written, and marked"
    assert "restored" not in medians[0] and "restored" not in medians[3]
    acks_now = {f["epoch"]: f for _id, f in _entries(env, env.k.acks)}
    assert sorted(acks_now) == [str(E + i) for i in range(4)]
    assert {k: v for k, v in acks_now[str(E + 1)].items() if k != "restored"} == acks_before[str(E + 1)]
    assert acted == [(E, 2.0), (E + 1, 3.5), (E + 2, 4.25), (E + 3, 1.0)], "nothing acted on twice"
    assert verify(env.r, env.k) == (4, []), "the history proves itself again"
    (ev,) = [e for e in events(env) if e["status"] == "restored"]
    assert (ev["epoch"], ev["last"]) == (str(E + 1), str(E + 2)) and "written back" in ev["reason"]
    said = [m for m in messages(caplog) if "lacked the acknowledged median" in m]
    assert len(said) == 1 and f"epochs {E + 1} to {E + 2} (2)" in said[0], said
    assert not [e for e in events(env) if e["status"] == "missed"], "written back: not counted as missed"
    # The operator sees it in status; check stays healthy (nothing was lost).
    data = gather(env.r, env.k)
    assert check_deployment(data).healthy, check_deployment(data).problems
    said = render(data, "redis://x")
    assert f"acknowledged medians a failover lost, written back: epochs {E + 1} to {E + 2} (this period)" in said

    # Nothing lost: nothing written back (each tick asks the master, once).
    run_epoch(env, t, E + 4, A=1.0, B=1.0)
    assert len([e for e in events(env) if e["status"] == "restored"]) == 1
    assert [f["epoch"] for _i, f in _entries(env, env.k.medians)] == [str(E + i) for i in range(5)]


def test_a_standby_writes_back_what_it_published_when_it_led(monkeypatch):
    """The failover also lost the lead (another trader leads on the new master): the trader that
    published the medians still writes them back, after the new leader's own, never over them."""
    env = Env(monkeypatch)
    t, E = _published_then_lost(env)
    env.r.delete(env.k.lease("trader"))
    other = acked_trader(env)
    run_epoch(env, other, E + 2, A=3.0)   # the failed-over master's last settled epoch is E: E + 1 missed
    run_epoch(env, t, E + 2, A=3.0)       # t stands by, and writes back E + 1, after the new leader's E + 2
    assert not t.token
    assert [f["epoch"] for _i, f in _entries(env, env.k.medians)] == [str(E), str(E + 2), str(E + 1)]
    assert sorted(int(f["epoch"]) for _i, f in _entries(env, env.k.acks)) == [E, E + 1, E + 2]
    assert verify(env.r, env.k) == (3, [])
    kinds = [(e["status"], e["epoch"]) for e in events(env)]
    assert kinds == [("missed", str(E + 1)), ("restored", str(E + 1))], "the later record says it was not lost"


def test_an_epoch_held_with_another_median_is_a_conflict_never_a_second_median(monkeypatch, caplog):
    env = Env(monkeypatch)
    t, E = _published_then_lost(env)
    env.r.xadd(env.k.medians, {"epoch": E + 1, "median": "9.0", "count": 1, "members": "A", "inputs": "9.0"})
    run_epoch(env, t, E + 2, A=3.0)
    assert [(f["epoch"], f["median"]) for _i, f in _entries(env, env.k.medians)] == [
        (str(E), "1.0"), (str(E + 1), "9.0"), (str(E + 2), "3.0")]
    (c,) = [e for e in events(env) if e["status"] == "conflict"]
    assert c["epoch"] == str(E + 1) and "acted on) with median 2.0" in c["reason"] and "median 9.0" in c["reason"]
    assert any(f"epoch {E + 1} was acknowledged with another median" in m for m in messages(caplog))
    assert str(E + 1) not in [f["epoch"] for _i, f in _entries(env, env.k.acks)]
    # An operator is told: check fails for --missed-window periods after it was found, status says it.
    health = check_deployment(gather(env.r, env.k))
    (p,) = [p for p in health.problems if "two medians" in p]
    assert p.startswith(f"trader: epoch {E + 1} has two medians (found this period; two masters at once): ") and \
        "median 9.0" in p, p
    assert "CONFLICT: " in render(gather(env.r, env.k), "redis://x")
    for i in range(3, 13):
        run_epoch(env, t, E + i, A=3.0)
    health = check_deployment(gather(env.r, env.k))
    assert health.healthy, health.problems
    assert "CONFLICT: " in render(gather(env.r, env.k), "redis://x"), "still shown, no longer failing check"


def test_the_memory_of_acknowledged_medians_is_bounded(monkeypatch):
    from redismedian import trader as T
    monkeypatch.setattr(T, "RESTORE_EPOCHS", 3)
    env = Env(monkeypatch)
    t = acked_trader(env)
    for i in range(5):
        run_epoch(env, t, env.E + i, A=float(i))
    assert [a.epoch for a in t.acked_memory] == [env.E + 2, env.E + 3, env.E + 4]
    monkeypatch.setattr(T, "RESTORE_MAX_BYTES", 1)
    run_epoch(env, t, env.E + 5, A=1.0)
    assert [a.epoch for a in t.acked_memory] == [env.E + 5], "the newest is always kept"
    t.wait_replicas = lambda n, timeout_ms: 0
    run_epoch(env, t, env.E + 6, A=1.0)
    assert [a.epoch for a in t.acked_memory] == [env.E + 5], "an unacknowledged median is not remembered"

    # Never more than the streams keep: an epoch trimmed from NS:medians (--medians-maxlen) is not lost.
    monkeypatch.setattr(T, "RESTORE_MAX_BYTES", 2**20)
    t = acked_trader(env, medians_maxlen=2)
    for i in range(7, 11):
        run_epoch(env, t, env.E + i, A=1.0)
    assert [a.epoch for a in t.acked_memory] == [env.E + 9, env.E + 10]
