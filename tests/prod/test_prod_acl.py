"""Per-role ACL users: the project's ACL file on a real redis-server.

The pipeline runs with one Redis user per component (passwords from a file, the environment
and the URL); Redis' ACL log stays empty, so no command was ever denied.  A strategy's
credentials cannot overwrite a signal, another strategy's decision, or the registry, by any
route (direct commands, EVAL, EVALSHA of our own script with another strategy's keys).
"""
import statistics
import subprocess
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redismedian.acl import render_acl
from redismedian import scripts as S
from redismedian.keys import Keys
from tests import plugins
from tests.prod_support import ACL_TEMPLATE, ConfRedis, acl_server, make_secrets, render_acl as run_render
from tests.support import ROOT, Cluster, harness_client, waitaof_binary, wait_until

NS = "redismedian"
NO_RETRY = Retry(NoBackoff(), 0)   # a refused login fails at once (redis-py retries with backoff by default)


def test_committed_acl_file_is_what_the_acl_command_prints():
    out = subprocess.run([sys.executable, "-m", "redismedian", "acl", "--generators", "g1,g2,g3",
                          "--strategies", "X,Y"], capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ACL_TEMPLATE.read_text()
    assert out.stdout == render_acl(NS, ["g1", "g2", "g3"], ["X", "Y"])
    users = [line.split()[1] for line in out.stdout.splitlines()]
    assert users == ["default", "admin", "operator", "trader", "generator.g1", "generator.g2", "generator.g3",
                     "strategy.X", "strategy.Y"]
    assert "user default off" in out.stdout and ">" not in out.stdout and "#" not in out.stdout  # no passwords


@pytest.fixture
def acl(tmp_path):
    server, pw = acl_server(tmp_path)
    yield server, pw
    server.kill()


def _user_client(server, user, pw):
    return harness_client(server.port, username=user, password=pw[user], decode_responses=True)


def _denied(fn, *args):
    """True when Redis refuses the call because of the ACL (NOPERM, or the in-script ACL check)."""
    try:
        fn(*args)
    except redis.exceptions.ResponseError as e:  # NoPermissionError is a ResponseError
        msg = str(e).lower()   # Redis 7.0: "...no permissions...", "...can't access..."; 7.2+ and Valkey: "No permissions..."
        assert "noperm" in msg or "can't access" in msg or "no permissions" in msg or "can't run this command" in msg \
            or "acl failure in script" in msg, msg
        return True
    return False


def test_pipeline_runs_under_per_role_users_and_operator_deregisters(acl, tmp_path):
    server, pw = acl
    secrets = tmp_path / "secrets"
    c = Cluster(server.url_for(), tmp_path, period=0.5, namespace=NS)

    def with_file(user):
        return c.env(REDISMEDIAN_REDIS_URL=server.url_for(user), REDISMEDIAN_PASSWORD_FILE=str(secrets / user))
    try:
        # The trader first: only it (or the operator) may create the deployment record, and a component
        # that tries first is refused once (an ACL LOG entry; test_prod_owned_keys.py covers that order).
        c.trader(env=with_file("trader"))
        admin = server.client(decode_responses=True)
        wait_until(lambda: admin.exists(f"{NS}:meta"), 15, what="the trader creating the deployment record")
        c.generator("g1", "tests.plugins:sig_a", env=with_file("generator.g1"))
        # the password from the environment, and from the URL
        c.generator("g2", "tests.plugins:sig_b", env=c.env(REDISMEDIAN_REDIS_URL=server.url_for("generator.g2"),
                                                           REDISMEDIAN_PASSWORD=pw["generator.g2"]))
        c.generator("g3", "tests.plugins:sig_c",
                    env=c.env(REDISMEDIAN_REDIS_URL=server.url_for("generator.g3", pw["generator.g3"])))
        c.strategy("X", "g1", env=with_file("strategy.X"))
        y = c.strategy("Y", "g2,g3", env=with_file("strategy.Y"))

        def both():
            return [f for _i, f in admin.xrange(f"{NS}:medians") if f["members"] == "X,Y"]
        entries = wait_until(lambda: len(both()) >= 3 and both(), 20, what="3 medians of X and Y")
        for f in entries:
            e = int(f["epoch"])
            assert float(f["median"]) == statistics.median(
                [plugins.sig_a(e), (plugins.sig_b(e) + plugins.sig_c(e)) / 2])
        assert admin.execute_command("ACL", "LOG") == [], "a component was denied a command"

        # Redis forgets its scripts (SCRIPT FLUSH here; a restart or a failover does the same): the
        # generators and strategies may not load them, the trader loads every role's at its next tick, and
        # medians of X and Y go on.  Nothing is refused: they do not even ask.
        admin.script_flush()
        flushed = len(admin.xrange(f"{NS}:medians"))
        wait_until(lambda: len([f for _i, f in admin.xrange(f"{NS}:medians")[flushed:] if f["members"] == "X,Y"]) >= 2,
                   20, what="2 medians of X and Y after SCRIPT FLUSH")
        assert admin.execute_command("ACL", "LOG") == [], "a component asked for what its user may not do"
        assert all(p.alive() for p in c.procs), "a component exited after SCRIPT FLUSH"

        # Each component's own user can run its health check; the operator checks everything.
        op_env = {"REDISMEDIAN_REDIS_URL": server.url_for("operator"),
                  "REDISMEDIAN_PASSWORD_FILE": str(secrets / "operator")}
        for user, args in (("generator.g1", ["generator", "g1"]), ("strategy.X", ["strategy", "X"]),
                           ("trader", ["trader"])):
            # waited for, not judged at one instant: on a loaded machine a 0.5 s epoch may have been missed
            # just before, and `check trader` is then rightly unhealthy for a while
            def healthy(user=user, args=args):
                r = _cli(c, ["check", *args], REDISMEDIAN_REDIS_URL=server.url_for(user),
                         REDISMEDIAN_PASSWORD_FILE=str(secrets / user))
                assert "Traceback" not in r.stderr and ("denied" not in r.stdout + r.stderr), (user, r.stdout, r.stderr)
                return r.returncode == 0 and r.stdout.startswith("OK: ")
            wait_until(healthy, 20, what=f"check {' '.join(args)} healthy under user {user}")
        wait_until(lambda: _cli(c, ["check"], **op_env).returncode == 0, 10, what="deployment check ok")
        for args in (["status"], ["history", "--csv"], ["status", "--json"]):
            r = _cli(c, args, **op_env)
            assert r.returncode == 0, (args, r.stderr)
        assert admin.execute_command("ACL", "LOG") == [], "an operator command was denied"

        # The strategy's and the trader's users cannot deregister anybody; the operator can.
        for user in ("strategy.X", "trader"):
            r = _cli(c, ["deregister", "Y"], REDISMEDIAN_REDIS_URL=server.url_for(user),
                     REDISMEDIAN_PASSWORD_FILE=str(secrets / user))
            assert r.returncode == 1 and "denied a command" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert admin.sismember(f"{NS}:strategies", "Y")
        r = _cli(c, ["deregister", "Y"], **op_env)
        assert r.returncode == 0, r.stderr
        assert y.wait(10) == 0
        n = len(admin.xrange(f"{NS}:medians"))
        wait_until(lambda: any(f["count"] == "1" for _i, f in admin.xrange(f"{NS}:medians")[n:]), 10,
                   what="a median of X alone after Y was deregistered")
        outputs = "".join(p.output() for p in c.procs)
        for user, secret in pw.items():
            assert secret not in outputs, f"{user}'s password appears in a log"
    finally:
        c.stop_all()


def _cli(c, args, **env):
    return subprocess.run([sys.executable, "-m", "redismedian", *args], env=c.env(**env), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=30)


def test_strategy_credentials_cannot_overwrite_signals_or_other_decisions(acl):
    server, pw = acl
    admin = server.client(decode_responses=True)
    sig, dec_y, dec_x = f"{NS}:signal:g1", f"{NS}:decision:Y", f"{NS}:decision:X"
    admin.hset(sig, mapping={"value": "0.25", "epoch": "7", "status": "ok"})
    admin.hset(dec_y, mapping={"value": "0.75", "epoch": "7"})
    admin.sadd(f"{NS}:strategies", "X", "Y")
    x = _user_client(server, "strategy.X", pw)

    # X reads signals and writes its own decision: allowed.
    assert x.hmget(sig, "value") == ["0.25"]
    assert x.xread({f"{NS}:signals:g1": "0-0"}, count=1) == []
    assert x.sismember(f"{NS}:strategies", "X")
    # Everything that would change a signal or Y's decision is refused, by every route.
    attempts = [
        (x.hset, sig, "value", "9"), (x.delete, sig), (x.pexpire, sig, 1), (x.rename, sig, f"{NS}:decision:X"),
        (x.xadd, f"{NS}:signals:g1", {"name": "g1", "epoch": "7", "value": "9", "status": "ok"}),
        (x.hset, dec_y, "value", "9"), (x.delete, dec_y), (x.pexpire, dec_y, 1), (x.unlink, dec_y),
        (x.copy, dec_x, dec_y), (x.srem, f"{NS}:strategies", "Y"), (x.delete, f"{NS}:strategies"),
        (x.eval, "return redis.call('HSET', KEYS[1], 'value', '9')", 1, dec_y),
        (x.set, f"{NS}:lease:strategy:Y", "me"), (x.hset, f"{NS}:trader", "median", "9"),
        (x.xadd, f"{NS}:medians", {"median": "9"}), (x.flushdb,),
    ]
    for fn, *args in attempts:
        assert _denied(fn, *args), f"{fn.__name__}{tuple(args)} was allowed"
    # Our own script, with Y's keys declared: refused before it runs (loaded by the admin: X may not load it).
    admin.script_load(S.STRATEGY_REPORT)
    def run_as_x(source, keys, args):
        return x.register_script(source)(keys=keys, args=args)
    assert _denied(lambda: S.strategy_report(run_as_x, Keys(NS), S.MetaArgs(500, "", "i", "o|0", 750), name="Y",
                                             epoch=7, value="9", state="ok", reason="", decision_ttl_ms=5000,
                                             ready_ttl_ms=1000, start_ms=0))
    # A script that declares only X's key but writes Y's: refused inside the script.
    sneaky = x.register_script("return redis.call('HSET', KEYS[1]:gsub(':X$', ':Y'), 'value', '9')")
    assert _denied(sneaky, [dec_x], [])
    sneaky_sig = x.register_script(f"return redis.call('HSET', '{sig}', 'value', '9')")
    assert _denied(sneaky_sig, [dec_x], [])
    assert admin.hgetall(sig) == {"value": "0.25", "epoch": "7", "status": "ok"}
    assert admin.hgetall(dec_y) == {"value": "0.75", "epoch": "7"}
    assert admin.smembers(f"{NS}:strategies") == {"X", "Y"}

    # A generator cannot write another generator's signal either, nor any decision.
    g2 = _user_client(server, "generator.g2", pw)
    for fn, *args in [(g2.hset, sig, "value", "9"), (g2.delete, sig), (g2.hset, dec_y, "value", "9"),
                      (g2.sadd, f"{NS}:strategies", "Z"),
                      (g2.xadd, f"{NS}:signals:g1", {"name": "g1", "epoch": "7", "value": "9", "status": "ok"})]:
        assert _denied(fn, *args), f"generator.g2: {fn.__name__}{tuple(args)} was allowed"
    # The trader reads decisions and admits registrations, but cannot change a decision or a signal,
    # nor deregister anybody.
    t = _user_client(server, "trader", pw)
    for fn, *args in [(t.hset, dec_y, "value", "9"), (t.set, dec_y, "7|9"), (t.srem, f"{NS}:strategies", "Y"),
                      (t.hset, sig, "value", "9"), (t.set, f"{NS}:lease:strategy:Y", "me")]:
        assert _denied(fn, *args), f"trader: {fn.__name__}{tuple(args)} was allowed"
    # The operator reads everything and may deregister, but writes nothing else.
    op = _user_client(server, "operator", pw)
    assert op.hgetall(dec_y)["value"] == "0.75"
    for fn, *args in [(op.hset, dec_y, "value", "9"), (op.delete, sig), (op.sadd, f"{NS}:strategies", "Z"),
                      (op.keys, "*")]:
        assert _denied(fn, *args), f"operator: {fn.__name__}{tuple(args)} was allowed"
    assert op.srem(f"{NS}:strategies", "Y") == 1
    # Nobody logs in without a password: the default user is off.
    anon = harness_client(server.port, retry=NO_RETRY)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.get(sig)


FUNCTION = "#!lua name=mine\nredis.register_function('spin', function() return 1 end)"


def test_no_role_runs_code_of_its_own(acl):
    """No role user may run a script of its own choosing (a script that writes and then loops makes Redis
    answer BUSY to everyone, and cannot be killed): no EVAL, no FUNCTION LOAD or FCALL, and EVALSHA of
    exactly its role's scripts.  Loading a script runs nothing: only the trader and the operator may,
    and even they cannot then run what they loaded."""
    server, pw = acl
    admin = server.client(decode_responses=True)
    roles = {"generator.g1": "generator", "strategy.X": "strategy", "trader": "trader", "operator": "operator"}
    own = "return redis.call('SET', KEYS[1], 'x')"
    for user, role in roles.items():
        c = _user_client(server, user, pw)
        key = {"generator": f"{NS}:signal:g1", "strategy": f"{NS}:decision:X", "trader": f"{NS}:trader",
               "operator": f"{NS}:meta"}[role]
        assert _denied(c.eval, "return 1", 0), f"{user}: EVAL allowed"
        assert _denied(c.eval, own, 1, key), f"{user}: EVAL of a write to its own key allowed"
        assert _denied(c.execute_command, "EVAL_RO", "return 1", 0), f"{user}: EVAL_RO allowed"
        assert _denied(c.execute_command, "FUNCTION", "LOAD", FUNCTION), f"{user}: FUNCTION LOAD allowed"
        assert _denied(c.execute_command, "FCALL", "spin", 0), f"{user}: FCALL allowed"
        assert _denied(c.execute_command, "SCRIPT", "KILL"), f"{user}: SCRIPT KILL allowed"
        sha = admin.script_load(own)      # loaded by somebody: still not runnable by the role
        assert _denied(c.evalsha, sha, 1, key), f"{user}: EVALSHA of a foreign script allowed"
        if role in S.LOADERS:
            assert c.script_load(own) == sha      # loading runs nothing ...
            assert _denied(c.evalsha, sha, 1, key), f"{user}: EVALSHA of what it loaded allowed"
        else:
            assert _denied(c.script_load, own), f"{user}: SCRIPT LOAD allowed"
        # every other role's scripts are out of reach too; its own are granted
        others = {S.sha1(x) for r, xs in S.ROLE_SCRIPTS.items() if r != role for x in xs} - {
            S.sha1(x) for x in S.ROLE_SCRIPTS[role]}
        admin.script_load(S.TRADER_TICK)
        for other in others:
            assert _denied(c.evalsha, other, 0), f"{user}: EVALSHA of another role's script {other} allowed"
        rules = admin.execute_command("ACL", "GETUSER", user)
        commands = dict(zip(rules[::2], rules[1::2]))["commands"] if isinstance(rules, list) else rules["commands"]
        assert sorted(r.split("|")[1] for r in commands.split() if r.startswith("+evalsha|")) == sorted(
            S.sha1(x) for x in S.ROLE_SCRIPTS[role])
    assert admin.get(f"{NS}:signal:g1") is None and admin.get(f"{NS}:decision:X") is None


def test_the_shipped_server_bounds_what_one_credential_can_write(acl):
    """deploy/redis/redis.conf: no argument over 1 MB (a 50 MB decision is refused before it is
    stored), and a memory ceiling."""
    server, pw = acl
    admin = server.client(decode_responses=True)
    x = _user_client(server, "strategy.X", pw)
    x.set(f"{NS}:decision:X", "7|" + "0" * 8000)          # the largest report: fine
    with pytest.raises(redis.exceptions.RedisError):
        x.set(f"{NS}:decision:X", "7|" + "0" * (2 * 1024 * 1024))
    assert len(admin.get(f"{NS}:decision:X")) == 8002
    assert int(admin.config_get("maxmemory")["maxmemory"]) == 1024 ** 3
    assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


def test_a_strategy_cannot_forge_or_read_a_peers_decision(acl):
    """The old per-epoch index NS:decisions:<E> (one sorted set every strategy wrote) let a
    strategy's user change or read another strategy's entry.  The trader now reads each strategy's
    own key, which only that strategy's user can write or read."""
    server, pw = acl
    admin = server.client(decode_responses=True)
    admin.set(f"{NS}:decision:Y", "7|0.75")
    x = _user_client(server, "strategy.X", pw)
    for fn, *args in [(x.set, f"{NS}:decision:Y", "7|9"), (x.get, f"{NS}:decision:Y"),
                      (x.zadd, f"{NS}:decisions:7", {"Y": 9.0}), (x.append, f"{NS}:decision:Y", "9"),
                      (x.getdel, f"{NS}:decision:Y"), (x.setrange, f"{NS}:decision:Y", 2, "9")]:
        assert _denied(fn, *args), f"{fn.__name__}{tuple(args)} was allowed"
    assert admin.get(f"{NS}:decision:Y") == "7|0.75"
    x.set(f"{NS}:decision:X", "7|0.5")      # its own decision: allowed
    assert admin.get(f"{NS}:decision:X") == "7|0.5"


def test_render_acl_overlapping_passwords_and_missing_secret(tmp_path):
    pw = make_secrets(tmp_path / "secrets")
    # A rotation in progress: the old and the new password both work.
    (tmp_path / "secrets" / "operator").write_text(f"{pw['operator']}\nnew-operator-password\n")
    out = tmp_path / "users.acl"
    r = run_render(ACL_TEMPLATE, tmp_path / "secrets", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    for secret in [*pw.values(), "new-operator-password"]:
        assert secret not in text and secret not in r.stderr
    server = ConfRedis(tmp_path / "redis", admin_password=pw["admin"], extra=["--aclfile", str(out)]).start()
    try:
        for p in (pw["operator"], "new-operator-password"):
            c = harness_client(server.port, username="operator", password=p)
            assert c.ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            harness_client(server.port, username="operator", password="wrong", retry=NO_RETRY).ping()
    finally:
        server.kill()
    (tmp_path / "secrets" / "strategy.Y").unlink()
    r = run_render(ACL_TEMPLATE, tmp_path / "secrets", tmp_path / "again.acl")
    assert r.returncode == 1 and "strategy.Y" in r.stderr and not (tmp_path / "again.acl").exists()


def test_password_rotation_as_in_the_runbook(acl, tmp_path):
    """docs/operations.md, "Rotating passwords": no moment where the component cannot log in."""
    server, pw = acl
    secret = tmp_path / "secrets" / "generator.g1"
    admin = server.client()
    c = Cluster(server.url_for(), tmp_path, period=0.5, namespace=NS)
    env = c.env(REDISMEDIAN_REDIS_URL=server.url_for("generator.g1"), REDISMEDIAN_PASSWORD_FILE=str(secret))
    old, new = pw["generator.g1"], "rotated-password-0123456789"
    try:
        # The deployment record comes from the trader (a generator's user may not create it).
        c.trader(env=c.env(REDISMEDIAN_REDIS_URL=server.url_for("trader"), REDISMEDIAN_PASSWORD=pw["trader"]))
        g = c.generator("g1", env=env)
        g.wait_for_output(r"g1 signal ", timeout=15)
        with open(secret, "a") as f:                                              # 1. append the new one
            f.write(new + "\n")
        admin.execute_command("ACL", "SETUSER", "generator.g1", ">" + new)       # 2. Redis accepts both
        assert g.stop() == 0                                                      # 3. restart the component
        g = c.generator("g1", env=env)
        g.wait_for_output(r"g1 signal ", timeout=15)
        admin.execute_command("ACL", "SETUSER", "generator.g1", "<" + old)       # 4. forget the old one
        secret.write_text(new + "\n")
        with pytest.raises(redis.exceptions.AuthenticationError):
            harness_client(server.port, username="generator.g1", password=old, retry=NO_RETRY).ping()
        g.wait_for_output(r"g1 signal ", timeout=15, count=3)                    # still running, logged in
        assert g.alive() and "refused" not in g.output()
        r = _cli(c, ["check", "generator", "g1"], REDISMEDIAN_REDIS_URL=server.url_for("generator.g1"),
                 REDISMEDIAN_PASSWORD_FILE=str(secret))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        c.stop_all()


def test_sentinel_and_replica_users_from_the_runbook_work(tmp_path):
    """docs/operations.md, "Moving to Sentinel": the replication and Sentinel users it gives are
    enough for a replica to sync and for a Sentinel to monitor the master."""
    import re
    from tests.support import REDIS_SERVER, free_port
    doc = (ROOT / "docs" / "operations.md").read_text()
    rules = {}
    for user in ("replica", "sentinel"):
        m = re.search(rf"`user {user} on #<sha256> ([^`]+)`", doc.replace("\n     ", " "))
        assert m, f"no {user} user in the runbook"
        rules[user] = m.group(1).split()
    acl_file = tmp_path / "users.acl"
    acl_file.write_text("user admin on >adminpw ~* &* +@all\n"
                        f"user replica on >replpw {' '.join(rules['replica'])}\n"
                        f"user sentinel on >sentpw {' '.join(rules['sentinel'])}\n"
                        "user default off\n")
    master = ConfRedis(tmp_path / "master", admin_password="adminpw",
                       extra=["--aclfile", str(acl_file), "--repl-diskless-sync-delay", "0"]).start()
    replica = ConfRedis(tmp_path / "replica", admin_password="adminpw",
                        extra=["--aclfile", str(acl_file), "--replicaof", "127.0.0.1", str(master.port),
                               "--masteruser", "replica", "--masterauth", "replpw"]).start()
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                    "sentinel auth-user mymaster sentinel\nsentinel auth-pass mymaster sentpw\n"
                    "sentinel down-after-milliseconds mymaster 1000\n")
    import subprocess as sp
    sentinel = sp.Popen([REDIS_SERVER, str(conf), "--sentinel", "--logfile", str(tmp_path / "sentinel.log")],
                        stdout=sp.DEVNULL, stderr=sp.DEVNULL, start_new_session=True)
    try:
        m = master.client(decode_responses=True)
        m.set("probe", "1")
        wait_until(lambda: replica.client(decode_responses=True).get("probe") == "1", 15, what="replica in sync")
        s = harness_client(sentinel_port, decode_responses=True)

        def monitored():
            info = s.execute_command("SENTINEL", "MASTER", "mymaster")
            info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
            return info["flags"] == "master" and int(info["num-slaves"]) == 1 and info
        wait_until(monitored, 15, what="sentinel monitoring the master and seeing the replica")
        assert m.execute_command("ACL", "LOG") == [], "the replica or the sentinel was denied a command"
    finally:
        sentinel.kill()
        sentinel.wait(10)
        replica.kill()
        master.kill()


def test_the_trader_user_can_explain_a_missed_epoch(acl):
    """A missed epoch's reason says which strategies are alive (trader.explain_missing reads their
    leases): under the trader's user that read is allowed, so the reason keeps that knowledge and
    Redis' ACL LOG stays empty (a CI run under load missed an epoch and the MGET was refused)."""
    from redismedian.trader import explain_missing
    server, pw = acl
    admin = server.client(decode_responses=True)
    admin.acl_log_reset()
    admin.set(f"{NS}:lease:strategy:X", "host:1|tok", px=60_000)     # X is alive, Y is not
    trader = _user_client(server, "trader", pw)
    keys = Keys(NS)
    problems = [("X", "no decision"), ("Y", "no decision")]
    got = dict(explain_missing(trader, keys, 7, ["X", "Y"], [None, None], problems))
    assert admin.acl_log() == []
    assert got["X"] != got["Y"], got          # judged again knowing X is alive and Y is not
    assert "not running" in got["Y"] or "down" in got["Y"] or "no live" in got["Y"], got


def test_trader_wait_aof_under_the_acl(tmp_path):
    """`trader --wait-aof` under the per-role users, on a server with WAITAOF: the shipped file (which
    must load on Redis 7.0, so it names no WAITAOF) makes the trader refuse at start, saying to give
    its user +waitaof; the file from `redismedian acl --wait-aof` lets it run: every ack says the
    master's append-only file held the median, and Redis denied nothing."""
    binary, why = waitaof_binary()
    if not binary:
        pytest.skip(why)
    server, pw = acl_server(tmp_path, binary=binary, extra=["--appendonly", "yes", "--appendfsync", "always"])
    secrets = tmp_path / "secrets"
    c = Cluster(server.url_for(), tmp_path, period=0.5, namespace=NS)

    def with_file(user):
        return c.env(REDISMEDIAN_REDIS_URL=server.url_for(user), REDISMEDIAN_PASSWORD_FILE=str(secrets / user))
    try:
        refused = c.trader("--wait-aof", env=with_file("trader"))
        assert refused.wait(30) == 1, refused.output()
        assert "this trader's Redis user may not send WAITAOF; give it +waitaof" in refused.output()
        assert "Traceback" not in refused.output()

        template = tmp_path / "users-wait-aof.acl"
        out = subprocess.run([sys.executable, "-m", "redismedian", "acl", "--generators", "g1,g2,g3",
                              "--strategies", "X,Y", "--wait-aof"], capture_output=True, text=True, cwd=str(ROOT),
                             timeout=30)
        assert out.returncode == 0, out.stderr
        template.write_text(out.stdout)
        assert run_render(template, secrets, tmp_path / "users.acl").returncode == 0   # the server's --aclfile
        admin = server.client(decode_responses=True)
        admin.execute_command("ACL", "LOAD")
        admin.acl_log_reset()
        c.trader("--wait-aof", env=with_file("trader"))
        wait_until(lambda: admin.exists(f"{NS}:meta"), 15, what="the trader creating the deployment record")
        c.generator("g1", "tests.plugins:sig_a", env=with_file("generator.g1"))
        c.strategy("X", "g1", env=with_file("strategy.X"))
        acks = wait_until(lambda: (lambda a: a if len(a) >= 3 else None)(admin.xrange(f"{NS}:acks")), 30,
                          what="3 medians on the master's disk")
        assert [f.get("aof") for _id, f in acks] == ["1"] * len(acks), acks
        assert admin.acl_log() == [], "the trader was denied a command"
    finally:
        c.stop_all()
        server.kill()
