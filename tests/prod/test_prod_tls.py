"""TLS: rediss:// URLs with --tls-ca-cert/--tls-cert/--tls-key against a redis-server serving TLS
on loopback, with a CA and certificates the test makes."""
import subprocess
import sys

import pytest

from tests.prod_support import ConfRedis, make_tls
from tests.support import ROOT, Cluster, wait_until


@pytest.fixture
def tls_server(tmp_path):
    """redis-server speaking only TLS and requiring a client certificate signed by our CA."""
    f = make_tls(tmp_path / "tls")
    server = ConfRedis(tmp_path / "redis", tls={"ssl": True, "ssl_ca_certs": str(f["ca"]),
                                                "ssl_certfile": str(f["client"]),
                                                "ssl_keyfile": str(f["client-key"])})
    server.extra = ["--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(f["server"]),
                    "--tls-key-file", str(f["server-key"]), "--tls-ca-cert-file", str(f["ca"]),
                    "--tls-auth-clients", "yes"]
    server.start()
    yield server, f
    server.kill()


def _cli(args, env=None, timeout=30):
    import os
    e = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "redismedian", *args], env=e, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def test_pipeline_and_status_over_tls(tls_server, tmp_path):
    server, f = tls_server
    url = f"rediss://127.0.0.1:{server.port}/0"
    c = Cluster(url, tmp_path, period=0.5, namespace="t")
    env = c.env(REDISMEDIAN_TLS_CA_CERT=str(f["ca"]), REDISMEDIAN_TLS_CERT=str(f["client"]),
                REDISMEDIAN_TLS_KEY=str(f["client-key"]))
    try:
        c.generator("g1", env=env)
        c.strategy("X", "g1", env=env)
        trader = c.trader(env=env)
        trader.wait_for_output(r"median: ", timeout=20, count=2)
    finally:
        c.stop_all()
    # really written through the TLS port.  Waited for, not asked once: redis-py's pool can refuse a fresh
    # TLS connection that has unread bytes ("Connection has data", then "Connection not ready": the
    # TLS 1.3 session tickets), and it does not retry that itself (CI saw it once).
    wait_until(lambda: server.client().xlen("t:medians") >= 2, 10, what="the medians written over TLS")
    tls = ["--tls-ca-cert", str(f["ca"]), "--tls-cert", str(f["client"]), "--tls-key", str(f["client-key"])]
    r = _cli(["status", "--redis-url", url, "--namespace", "t", *tls])
    assert r.returncode == 0, r.stderr
    assert f"redismedian at {url}" in r.stdout and "X" in r.stdout
    r = _cli(["history", "--redis-url", url, "--namespace", "t", "--csv", *tls])
    assert r.returncode == 0 and r.stdout.count("\n") >= 3, r.stderr


def test_tls_failures_are_one_line_errors(tls_server):
    server, f = tls_server
    url = f"rediss://127.0.0.1:{server.port}/0"
    cases = {
        "a CA that did not sign the server's certificate": (
            ["--tls-ca-cert", str(f["other-ca"]), "--tls-cert", str(f["client"]), "--tls-key", str(f["client-key"])],
            "certificate verify failed"),
        # the server's refusal reads "certificate required" or an EOF, depending on timing
        "no client certificate where the server requires one": (["--tls-ca-cert", str(f["ca"])], ""),
    }
    for what, (opts, expect) in cases.items():
        r = _cli(["status", "--redis-url", url, *opts])
        assert r.returncode == 1, what
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, (what, r.stderr)
        assert lines[0].startswith(f"Error: Redis at {url} is not reachable"), (what, r.stderr)
        assert expect.lower() in lines[0].lower(), (what, r.stderr)
    # plain Redis protocol against the TLS port
    r = _cli(["status", "--redis-url", f"redis://127.0.0.1:{server.port}/0"])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_tls_option_mistakes_are_usage_errors(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    r = _cli(["status", "--redis-url", "redis://127.0.0.1:1/0", "--tls-ca-cert", str(ca)])
    assert r.returncode == 2 and "need a rediss:// or rediss+cluster:// URL" in r.stderr, r.stderr
    r = _cli(["status", "--redis-url", "rediss://127.0.0.1:1/0", "--tls-ca-cert", str(tmp_path / "missing.crt")])
    assert r.returncode == 2 and "missing.crt does not exist" in r.stderr, r.stderr
    r = _cli(["check", "trader", "--redis-url", "rediss://127.0.0.1:1/0", "--tls-key", str(ca)])
    assert r.returncode == 2 and "--tls-key needs --tls-cert" in r.stderr, r.stderr
    r = _cli(["generator", "--name", "g1", "--redis-url", "redis://127.0.0.1:1/0"],
             env={"REDISMEDIAN_TLS_CERT": str(ca)})
    assert r.returncode == 2 and "need a rediss:// or rediss+cluster:// URL" in r.stderr, r.stderr
