"""Passwords come from the URL, the environment or a file, and are never printed; a wrong password
is a one-line error with a non-zero exit.  Also: --log-format json."""
import io
import json
import logging
import os
import subprocess
import sys

import pytest

from redismedian import logs
from redismedian.connection import read_password_file, redact_url, redis_settings
from tests.prod_support import acl_server
from tests.support import ROOT, Cluster


# -- unit: where the password comes from ------------------------------------------------------
def test_password_sources_and_precedence(tmp_path):
    f = tmp_path / "pw"
    f.write_text("old-password\r\n\nnew-password\r\n\n")
    assert read_password_file(str(f)) == "new-password"       # the last non-empty line, CRLF tolerated
    env = "from-env"    # $REDISMEDIAN_PASSWORD, which the command line reads
    assert redis_settings("redis://u@h/0", password_file=str(f), env_password=env).client_kwargs() == {
        "password": "new-password"}
    assert redis_settings("redis://u@h/0", env_password=env).client_kwargs() == {"password": "from-env"}
    # redis-py takes it from the URL
    assert redis_settings("redis://u:in-url@h/0", env_password=env).client_kwargs() == {}
    assert redis_settings("redis://h/0").client_kwargs() == {}
    with pytest.raises(ValueError, match="both in the Redis URL and in a password file"):
        redis_settings("redis://u:in-url@h/0", password_file=str(f))
    shown = repr(redis_settings("redis://u:in-url@h/0", env_password=env, sentinel_password="s-pw"))
    assert "in-url" not in shown and "s-pw" not in shown and "redis://u:***@h/0" in shown
    assert "new-password" not in repr(redis_settings("redis://u@h/0", password_file=str(f)))
    (tmp_path / "empty").write_text("\n  \n")
    with pytest.raises(ValueError, match="is empty"):
        read_password_file(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot read password file .*nope"):
        read_password_file(str(tmp_path / "nope"))


def test_redaction_of_urls_and_log_lines():
    assert redact_url("redis://u:s3cret@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("rediss://:s3cret@h/0") == "rediss://:***@h/0"
    assert redact_url("redis://h/0?password=s3cret&db=2") == "redis://h/0?password=***&db=2"
    assert redact_url("unix:///run/redis.sock?password=s3cret") == "unix:///run/redis.sock?password=***"
    logs.add_secret("file-secret-123")
    assert logs.redact("x redis://u:s3cret@h/0 y") == "x redis://u:***@h/0 y"
    assert logs.redact("auth with file-secret-123 failed") == "auth with *** failed"
    assert logs.redact("?password=abc&x=1") == "?password=***&x=1"


def test_json_log_lines_carry_fields_and_redact():
    buf = io.StringIO()
    logs.setup("INFO", stream=buf, fmt="json", fields={"component": "trader", "name": None, "namespace": "t"})
    try:
        logs.add_secret("json-secret-456")
        logging.getLogger("redismedian.trader").warning("bad %s at %s", "json-secret-456", "redis://a:b@h/0")
        try:
            raise RuntimeError("boom json-secret-456")
        except RuntimeError:
            logging.getLogger("redismedian.trader").exception("failed")
    finally:
        logs.setup("INFO")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "WARNING" and first["logger"] == "redismedian.trader"
    assert first["message"] == "bad *** at redis://a:***@h/0"
    assert first["component"] == "trader" and first["namespace"] == "t" and "name" not in first
    assert first["time"].endswith("Z") and first["pid"] == os.getpid()
    assert "RuntimeError: boom ***" in lines[1]["exception"]
    assert "json-secret-456" not in buf.getvalue()


# -- integration: a real redis-server with the project's ACL file -------------------------------
@pytest.fixture
def acl(tmp_path):
    server, pw = acl_server(tmp_path)
    yield server, pw
    server.kill()


def _run(args, env, timeout=30):
    e = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
    e.update(env)
    return subprocess.run([sys.executable, "-m", "redismedian", *args], env=e, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def test_wrong_password_is_one_line_and_never_printed(acl, tmp_path):
    server, pw = acl
    wrong = "wrong-password-789"
    (tmp_path / "wrong").write_text(wrong + "\n")
    url_user = server.url_for("generator.g1")
    cases = {
        "component, password file": (["generator", "--name", "g1", "--period", "0.5"],
                                     {"REDISMEDIAN_REDIS_URL": url_user,
                                      "REDISMEDIAN_PASSWORD_FILE": str(tmp_path / "wrong")}),
        "component, password in the URL": (["trader", "--period", "0.5"],
                                           {"REDISMEDIAN_REDIS_URL": server.url_for("trader", wrong)}),
        "status, password from the environment": (["status"], {"REDISMEDIAN_REDIS_URL": server.url_for("operator"),
                                                                "REDISMEDIAN_PASSWORD": wrong}),
        "deregister, password in the URL": (["deregister", "X"],
                                            {"REDISMEDIAN_REDIS_URL": server.url_for("operator", wrong)}),
        "history, password file": (["history"], {"REDISMEDIAN_REDIS_URL": server.url_for("operator"),
                                                 "REDISMEDIAN_PASSWORD_FILE": str(tmp_path / "wrong")}),
    }
    for what, (args, env) in cases.items():
        r = _run(args, env)
        out = r.stdout + r.stderr
        assert r.returncode == 1, (what, out)
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1, (what, out)
        assert "refused our credentials: invalid username-password pair" in lines[0], (what, out)
        assert "Traceback" not in out and wrong not in out, (what, out)
    r = _run(["check", "trader"], {"REDISMEDIAN_REDIS_URL": server.url_for("trader", wrong)})
    assert r.returncode == 1 and r.stdout.startswith("UNHEALTHY: ") and wrong not in r.stdout + r.stderr


def test_right_password_never_appears_in_logs_or_status(acl, tmp_path):
    server, pw = acl
    c = Cluster(server.url_for(), tmp_path, period=0.5, namespace="redismedian")
    secret = pw["generator.g1"]
    gen = c.generator("g1", env=c.env(REDISMEDIAN_REDIS_URL=server.url_for("generator.g1", secret),
                                      REDISMEDIAN_LOG_FORMAT="json"))
    try:
        # Under the ACL a generator may not load its scripts on a fresh Redis (nor create the deployment
        # record): it waits for the trader.
        gen.wait_for_output(r'"message": "waiting for the trader to load this generator', timeout=15)
        trader = c.trader(env=c.env(REDISMEDIAN_REDIS_URL=server.url_for("trader", pw["trader"])))
        gen.wait_for_output(r'"message": "g1 signal ', timeout=15)
        # A status command given the password in its URL shows the URL redacted.
        r = _run(["status"], {"REDISMEDIAN_REDIS_URL": server.url_for("operator", pw["operator"])})
        assert r.returncode == 0, r.stderr
        assert f"redis://operator:***@127.0.0.1:{server.port}/0" in r.stdout
        assert pw["operator"] not in r.stdout + r.stderr
    finally:
        c.stop_all()
    out = gen.log_path.read_text()
    assert secret not in out and pw["trader"] not in trader.log_path.read_text()
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert records and all(rec["component"] == "generator" and rec["name"] == "g1" for rec in records)
    assert any(rec["message"].startswith("g1 signal ") for rec in records)
    waiting = [rec for rec in records if rec["message"].startswith("waiting for the trader")]
    assert len(waiting) == 1 and waiting[0]["level"] == "WARNING", waiting    # said once, not every period


def test_password_file_mistakes_are_usage_errors(tmp_path):
    r = _run(["status", "--password-file", str(tmp_path / "nope")], {})
    assert r.returncode == 2 and "cannot read password file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "pw").write_text("x\n")
    r = _run(["status", "--redis-url", "redis://u:inurl@127.0.0.1:1/0", "--password-file", str(tmp_path / "pw")], {})
    assert r.returncode == 2 and "both in the Redis URL and in a password file" in r.stderr
    assert "inurl" not in r.stderr
