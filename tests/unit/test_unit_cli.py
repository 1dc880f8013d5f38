"""The command line: usage errors (exit 2) that say what is allowed, env vars, help text, operator commands."""
import json

import click
import pytest
import redis
from click.testing import CliRunner

from redismedian import cli as cli_mod
from redismedian.common import NAME_RULE
from redismedian.generator import Generator
from redismedian.strategy import Strategy
from redismedian.trader import Trader
from tests import plugins

ENV_VARS = ("REDISMEDIAN_REDIS_URL", "REDISMEDIAN_NAMESPACE", "REDISMEDIAN_PERIOD", "REDISMEDIAN_SOCKET_TIMEOUT",
            "REDISMEDIAN_LOG_LEVEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)


@pytest.fixture
def started(monkeypatch):
    """Components the commands would run (nothing connects to Redis)."""
    got = []
    monkeypatch.setattr(cli_mod, "_run", lambda component, log_level: got.append((component, log_level)))
    return got


def invoke(*args, env=None):
    return CliRunner().invoke(cli_mod.cli, list(args), env=env, catch_exceptions=False)


def usage_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, result.output
    return result


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a b", "a:b", "", "x" * 65, "é", "a\n"])
@pytest.mark.parametrize("cmd", [["generator", "--name"], ["strategy", "--signals", "g1", "--name"],
                                 ["deregister", "-n"], ["deregister"]])
def test_bad_names_are_usage_errors_saying_what_is_allowed(started, cmd, bad):
    usage_error(invoke(*cmd, bad), NAME_RULE.split(":")[0])
    assert not started


@pytest.mark.parametrize("signals,needle", [("g1,bad name", "invalid"), ("g1,g1", "listed twice"),
                                            (",", "at least one")])
def test_bad_signal_lists_are_usage_errors(started, signals, needle):
    usage_error(invoke("strategy", "--name", "X", "--signals", signals), needle)


def test_missing_required_options_are_usage_errors(started):
    usage_error(invoke("generator"), "--name")
    usage_error(invoke("strategy", "--name", "X"), "--signals")


# -- plug-ins ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["generator", "--name", "g1", "--signal", "no_such_mod_q:f"],
                                  ["generator", "--name", "g1", "--signal", "tests.plugins:missing"],
                                  ["generator", "--name", "g1", "--signal", "tests.plugins"],
                                  ["strategy", "--name", "X", "--signals", "g1", "--decide", "tests.plugins:nope"],
                                  ["strategy", "--name", "X", "--signals", "g1", "--decide", "math:pi"]])
def test_unresolvable_plugin_is_a_usage_error_at_start(started, args):
    usage_error(invoke(*args))
    assert not started


def test_plugins_resolve_to_the_functions(started):
    assert invoke("generator", "--name", "g1", "--signal", "tests.plugins:sig_b").exit_code == 0
    assert invoke("strategy", "--name", "X", "--signals", "g2,g1",
                  "--decide", "tests.plugins:decide_max").exit_code == 0
    (g, _), (s, _) = started
    assert isinstance(g, Generator) and g.signal_fn is plugins.sig_b and g.name == "g1"
    assert isinstance(s, Strategy) and s.decide_fn is plugins.decide_max and s.generators == ["g2", "g1"]


# -- options and environment variables -----------------------------------------------------------
def test_defaults(started):
    assert invoke("trader").exit_code == 0
    t, level = started[0]
    assert isinstance(t, Trader)
    assert (t.settings.redis_url, t.settings.namespace, t.settings.period_ms) == (
        "redis://localhost:6379/0", "redismedian", 60_000)
    assert t.settings.socket_timeout == 5.0 and level == "INFO"
    assert t.decision_timeout_ms == 48_000


@pytest.mark.parametrize("var,value,attr,expect", [
    ("REDISMEDIAN_REDIS_URL", "redis://127.0.0.1:7000/3", "redis_url", "redis://127.0.0.1:7000/3"),
    ("REDISMEDIAN_NAMESPACE", "prod-1", "namespace", "prod-1"),
    ("REDISMEDIAN_PERIOD", "0.5", "period_ms", 500),
    ("REDISMEDIAN_SOCKET_TIMEOUT", "1.5", "socket_timeout", 1.5),
])
@pytest.mark.parametrize("cmd", [["generator", "--name", "g1"], ["strategy", "--name", "X", "--signals", "g1"],
                                 ["trader"]])
def test_each_env_var_works_on_its_own(started, cmd, var, value, attr, expect):
    r = invoke(*cmd, env={var: value})
    assert r.exit_code == 0, r.output
    assert getattr(started[0][0].settings, attr) == expect


def test_log_level_env_var(started):
    assert invoke("trader", env={"REDISMEDIAN_LOG_LEVEL": "debug"}).exit_code == 0
    assert started[0][1].upper() == "DEBUG"


def test_flag_beats_env_var(started):
    assert invoke("trader", "--period", "2", env={"REDISMEDIAN_PERIOD": "0.5"}).exit_code == 0
    assert started[0][0].settings.period_ms == 2000


@pytest.mark.parametrize("var,value,needle", [
    ("REDISMEDIAN_REDIS_URL", "http://h:1", "scheme"),
    ("REDISMEDIAN_REDIS_URL", "redis://h:99999", "invalid Redis URL"),
    ("REDISMEDIAN_NAMESPACE", "a b", "invalid namespace"),
    ("REDISMEDIAN_PERIOD", "soon", "--period"),
    ("REDISMEDIAN_PERIOD", "0", "between"),
    ("REDISMEDIAN_SOCKET_TIMEOUT", "-1", "positive"),
])
def test_bad_env_values_are_usage_errors(started, var, value, needle):
    usage_error(invoke("trader", env={var: value}), needle)
    assert not started


@pytest.mark.parametrize("url", ["localhost:6379", "redis://", "redis://h/db", "unix://", "redis://h:-1"])
@pytest.mark.parametrize("cmd", [["trader"], ["status"], ["deregister", "X"], ["generator", "-n", "g"]])
def test_bad_url_is_a_usage_error(started, cmd, url):
    usage_error(invoke(*cmd, "--redis-url", url), "invalid Redis URL")


def test_bad_url_error_hides_the_password(started):
    r = usage_error(invoke("trader", "--redis-url", "redis://u:hunter2@h:99999/0"))
    assert "hunter2" not in r.output


SECRET_VARS = ("REDISMEDIAN_PASSWORD", "REDISMEDIAN_PASSWORD_FILE", "REDISMEDIAN_SENTINEL_PASSWORD",
               "REDISMEDIAN_MASTER_PASSWORD")


def test_credentials_reach_the_settings_and_nothing_else(started, monkeypatch, tmp_path):
    """Options and env vars become one typed RedisSettings (handed to the component), never written
    back into the environment, and never shown by repr."""
    import os
    for v in SECRET_VARS:
        monkeypatch.delenv(v, raising=False)
    url = "redis+sentinel://app@127.0.0.1:1,127.0.0.1:2/svc"
    assert invoke("trader", "--redis-url", url, "--master-password", "m-opt", "--sentinel-password", "s-opt",
                  "--socket-timeout", "1.5").exit_code == 0
    rs = started[-1][0].settings.redis
    assert (rs.url, rs.master_password, rs.sentinel_password, rs.socket_timeout) == (url, "m-opt", "s-opt", 1.5)
    assert rs.user == "app" and not rs.cluster and rs.password is None
    assert not any(v in os.environ for v in SECRET_VARS), "no side channel through the environment"
    assert "m-opt" not in repr(started[-1][0].settings) and "s-opt" not in repr(rs)
    # the same through the environment; $REDISMEDIAN_PASSWORD reaches the settings too
    assert invoke("trader", "--redis-url", url, env={"REDISMEDIAN_MASTER_PASSWORD": "m-env",
                                                     "REDISMEDIAN_SENTINEL_PASSWORD": "s-env",
                                                     "REDISMEDIAN_PASSWORD": "p-env"}).exit_code == 0
    rs = started[-1][0].settings.redis
    assert (rs.master_password, rs.sentinel_password, rs.password) == ("m-env", "s-env", "p-env")
    assert rs.password_source == "$REDISMEDIAN_PASSWORD" and "p-env" not in repr(rs)
    # a password file beats $REDISMEDIAN_PASSWORD; a cluster URL makes a cluster setting
    (tmp_path / "pw").write_text("p-file\n")
    assert invoke("generator", "-n", "g1", "--redis-url", "redis+cluster://u@h1:7000,h2:7001",
                  "--password-file", str(tmp_path / "pw"), env={"REDISMEDIAN_PASSWORD": "p-env"}).exit_code == 0
    rs = started[-1][0].settings.redis
    assert rs.cluster and rs.user == "u" and rs.password == "p-file" and "p-file" not in repr(rs)


@pytest.mark.parametrize("opt", ["--signal-timeout", "--decision-timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "60", "61"])
def test_bad_deadlines_are_usage_errors(started, opt, value):
    cmd = ["strategy", "--name", "X", "--signals", "g1"] if opt == "--signal-timeout" else ["trader"]
    usage_error(invoke(*cmd, "--period", "60", opt, value))


@pytest.mark.parametrize("value", ["0", "nan", "inf", "-inf"])
def test_bad_socket_timeouts_are_usage_errors(started, value):
    usage_error(invoke("trader", "--socket-timeout", value))


def test_deadlines_are_passed_in_ms(started):
    assert invoke("strategy", "--name", "X", "--signals", "g1", "--period", "10",
                  "--signal-timeout", "2.5").exit_code == 0
    assert invoke("trader", "--period", "10", "--decision-timeout", "9").exit_code == 0
    assert started[0][0].signal_timeout_ms == 2500 and started[1][0].decision_timeout_ms == 9000


def test_bad_medians_maxlen_is_a_usage_error(started):
    usage_error(invoke("trader", "--medians-maxlen", "0"))


# -- help ----------------------------------------------------------------------------------------
def _walk(cmd, path=()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, path + (name,))


def test_every_command_and_option_has_help_text():
    seen = 0
    for path, cmd in _walk(cli_mod.cli):
        assert (cmd.help or "").strip(), f"command {' '.join(path) or 'redismedian'} has no help"
        ctx = click.Context(cmd, info_name=path[-1] if path else "redismedian")
        for p in cmd.get_params(ctx):
            if isinstance(p, click.Option):
                assert (p.help or "").strip(), f"option {p.opts} of {' '.join(path)} has no help"
            else:
                # arguments have no help attribute of their own: the command's help must explain them
                assert p.human_readable_name.upper() in cmd.help, f"{p.name} of {' '.join(path)} is not explained"
            seen += 1
        r = CliRunner().invoke(cli_mod.cli, [*path, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, r.output
    assert seen > 20


def test_module_entry_points_have_help():
    for cmd in (cli_mod.generator_cmd, cli_mod.strategy_cmd, cli_mod.trader_cmd):
        r = CliRunner().invoke(cmd, ["--help"])
        assert r.exit_code == 0 and "--period" in r.output and "REDISMEDIAN_PERIOD" in r.output


# -- operator commands ---------------------------------------------------------------------------
@pytest.fixture
def operator_redis(env, monkeypatch):
    """`status` and `deregister` talk to the fake Redis."""
    monkeypatch.setattr(cli_mod, "make_client", lambda url, socket_timeout=5.0, **kw: env.r)
    return env


def test_deregister_is_srem(operator_redis):
    r = operator_redis.r
    r.sadd("t:strategies", "X", "Y")
    res = invoke("deregister", "X", "--namespace", "t")
    assert res.exit_code == 0 and "deregistered X" in res.output
    assert r.smembers("t:strategies") == {b"Y"}
    res = invoke("deregister", "-n", "Y", "--namespace", "t")
    assert res.exit_code == 0 and r.smembers("t:strategies") == set()


def test_deregister_unknown_name_is_a_clear_error(operator_redis):
    operator_redis.r.sadd("t:strategies", "X", "Y")
    res = invoke("deregister", "Z", "--namespace", "t")
    assert res.exit_code == 1
    assert "no strategy named 'Z'" in res.output and "X, Y" in res.output and "Traceback" not in res.output
    assert operator_redis.r.scard("t:strategies") == 2


def test_deregister_with_nothing_registered(operator_redis):
    res = invoke("deregister", "Z", "--namespace", "t")
    assert res.exit_code == 1 and "registered: none" in res.output


def test_deregister_when_registry_is_garbage(operator_redis):
    operator_redis.r.set("t:strategies", "oops")
    res = invoke("deregister", "X", "--namespace", "t")
    # the registry guard removes what is not a set (and would restore it from its backup)
    assert res.exit_code == 1 and "t:strategies was a string (replaced" in res.output
    assert "Traceback" not in res.output
    assert operator_redis.r.type("t:strategies") == b"none"


def test_deregister_name_argument_rules(operator_redis):
    usage_error(invoke("deregister", "--namespace", "t"), "give the strategy name")
    usage_error(invoke("deregister", "X", "-n", "Y", "--namespace", "t"), "two different names")
    operator_redis.r.sadd("t:strategies", "X")
    assert invoke("deregister", "X", "-n", "X", "--namespace", "t").exit_code == 0


def test_status_runs_on_an_empty_redis(operator_redis):
    res = invoke("status", "--namespace", "t")
    assert res.exit_code == 0 and "no deployment record yet" in res.output
    data = json.loads(invoke("status", "--json", "--namespace", "t").output)
    assert data["namespace"] == "t" and data["strategies"] == [] and data["generators"] == []


class _Refusing:
    def __init__(self, exc):
        self.exc = exc

    def ping(self):
        raise self.exc


@pytest.mark.parametrize("exc,needle", [
    (redis.exceptions.AuthenticationError("invalid username-password pair"), "refused our credentials"),
    (redis.exceptions.ResponseError("WRONGPASS invalid username-password pair"), "refused our credentials"),
    (redis.exceptions.ConnectionError("Connection refused"), "is not reachable"),
    (redis.exceptions.TimeoutError("Timeout reading from socket"), "is not reachable"),
])
@pytest.mark.parametrize("cmd", [["status"], ["deregister", "X"]])
def test_operator_commands_fail_in_one_line(monkeypatch, cmd, exc, needle):
    monkeypatch.setattr(cli_mod, "make_client", lambda url, socket_timeout=5.0, **kw: _Refusing(exc))
    res = invoke(*cmd, "--redis-url", "redis://u:pw123@127.0.0.1:1/0")
    assert res.exit_code == 1
    assert needle in res.output and "Traceback" not in res.output and "pw123" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_unreachable_redis_for_real_is_one_line():
    # port 1 on loopback: nothing listens, the connection is refused at once
    res = invoke("status", "--redis-url", "redis://127.0.0.1:1/0")
    assert res.exit_code == 1 and "is not reachable" in res.output and "Traceback" not in res.output
