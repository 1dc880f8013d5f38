"""deploy/: the compose file, the Dockerfile, the systemd units and their environment files, the
Redis configuration and the helper scripts.

There is no Docker engine and no systemd running here, so the tests (1) parse every file and
check each command, option and environment variable against the real command line, and (2)
play the compose file and the units for real without Docker or systemd: start Redis the
way the Redis container does (start-redis.sh), run each service's command with its
environment and secrets, and run each healthcheck.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from redismedian.cli import cli
from tests.prod_support import ACL_TEMPLATE, DEPLOY, REDIS_CONF, make_secrets
from tests.support import REDIS_SERVER, ROOT, Proc, free_port, harness_client, wait_until

COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
ACL_USERS = [line.split()[1] for line in ACL_TEMPLATE.read_text().splitlines() if " on " in line]
TOPOLOGY = {"generator": ["g1", "g2", "g3"], "strategy": ["X", "Y"]}


def _pyproject() -> dict:
    """The two facts the tests need from pyproject.toml (tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    scripts = re.search(r"^\[project\.scripts\]\n((?:[^\[\n].*\n?)*)", text, re.M).group(1)
    return {"requires-python": re.search(r'^requires-python = ">=([\d.]+)"', text, re.M).group(1),
            "scripts": {line.split("=")[0].strip() for line in scripts.splitlines() if "=" in line}}


# -- the real command line ------------------------------------------------------------------------
@contextlib.contextmanager
def _environ(env: dict[str, str]):
    saved = dict(os.environ)
    for k in list(os.environ):
        if k.startswith("REDISMEDIAN_"):
            del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[click.Command, click.Context]:
    """Parse ``redismedian ARGV`` exactly as the program would (options, environment, callbacks)."""
    assert argv and argv[0] in cli.commands, f"{argv[0]!r} is not a redismedian command"
    cmd = cli.commands[argv[0]]
    with _environ(env or {}):
        ctx = cmd.make_context(argv[0], list(argv[1:]))
    return cmd, ctx


def envvars(cmd: click.Command) -> set[str]:
    out = {"REDISMEDIAN_PASSWORD"}  # read from the environment directly, never an option
    for p in cmd.params:
        names = p.envvar if isinstance(p.envvar, (list, tuple)) else [p.envvar]
        out |= {n for n in names if n}
    return out


def test_parse_cli_rejects_what_the_program_rejects():
    with pytest.raises(click.UsageError):
        parse_cli(["generator", "--nme", "g1"])
    with pytest.raises(click.BadParameter):
        parse_cli(["strategy", "--name", "X"], {"REDISMEDIAN_SIGNALS": "g1,,g1"})
    cmd, ctx = parse_cli(["strategy", "--name", "X"], {"REDISMEDIAN_SIGNALS": "g2,g3", "REDISMEDIAN_PERIOD": "2"})
    assert ctx.params["signals"] == ["g2", "g3"] and ctx.params["period"] == 2000
    assert "REDISMEDIAN_METRICS_PORT" in envvars(cmd) and "REDISMEDIAN_SIGNALS" in envvars(cmd)


# -- docker compose -------------------------------------------------------------------------------
def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert m, f"not a compose duration: {text!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_compose_services_commands_and_options_exist():
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"redis", "g1", "g2", "g3", "strategy-x", "strategy-y", "trader", "operator", "web"}
    secrets = doc["secrets"]
    assert set(secrets) == set(ACL_USERS) | {"web-token"}, "one compose secret per Redis user, and the page's token"
    for name, spec in secrets.items():
        assert spec["file"] == f"./secrets/{name}"
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[1] == "*"

    for name, svc in services.items():
        if name in ("redis", "web"):   # web: tests/integration/test_web.py
            continue
        env = {k: str(v) for k, v in svc["environment"].items()}
        cmd, ctx = parse_cli(svc["command"], env)
        assert set(env) <= envvars(cmd), f"{name}: unknown variables {set(env) - envvars(cmd)}"
        # credentials: a user in the URL, the password only as a mounted secret
        url = urlsplit(env["REDISMEDIAN_REDIS_URL"])
        assert url.password is None and "REDISMEDIAN_PASSWORD" not in env, name
        assert url.hostname == "redis" and url.port == 6379
        assert env["REDISMEDIAN_PASSWORD_FILE"] == f"/run/secrets/{url.username}"
        assert svc["secrets"] == [url.username], f"{name} gets exactly its own secret"
        assert url.username in ACL_USERS
        if name == "operator":
            assert svc["profiles"] == ["tools"] and url.username == "operator"
            continue
        kind = svc["command"][0]
        expected_user = kind if kind == "trader" else f"{kind}.{ctx.params['name']}"
        assert url.username == expected_user, f"{name} logs in as its own ACL user"
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert svc["restart"] == ("on-failure" if kind == "strategy" else "unless-stopped"), name
        assert 2 < _seconds(svc["stop_grace_period"]) <= 60
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}}
        hc = svc["healthcheck"]
        assert hc["test"][:3] == ["CMD", "redismedian", "check"], name
        hcmd, hctx = parse_cli(hc["test"][2:], env)
        assert hctx.params["kind"] == kind and hctx.params["name"] == (None if kind == "trader" else
                                                                      ctx.params["name"])
        assert _seconds(hc["start_period"]) > _seconds(env["REDISMEDIAN_PERIOD"] + "s"), \
            "the first value comes up to one period after start"
        assert int(env["REDISMEDIAN_METRICS_PORT"]) == 9100 and str(svc["expose"][0]) == "9100"

    redis_svc = services["redis"]
    assert redis_svc["image"].startswith("redis:7")
    assert redis_svc["entrypoint"] == ["sh", "/usr/local/etc/redis/start-redis.sh"]
    assert "./redis:/usr/local/etc/redis:ro" in redis_svc["volumes"]
    assert any(v.endswith(":/data") for v in redis_svc["volumes"]) and "redis-data" in doc["volumes"]
    assert set(redis_svc["secrets"]) == set(ACL_USERS)
    assert redis_svc["restart"] == "unless-stopped" and _seconds(redis_svc["stop_grace_period"]) >= 10
    for f in ("start-redis.sh", "render-acl.sh", "redis.conf", "users.acl"):
        assert (DEPLOY / "redis" / f).is_file()
    for script in ("redis/start-redis.sh", "redis/render-acl.sh", "make-secrets.sh"):
        r = subprocess.run(["sh", "-n", str(DEPLOY / script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)


def test_compose_file_runs_without_docker(tmp_path):
    """Redis started the way its container starts it, each service's command with its own
    environment and secret, then every healthcheck: the deployment is healthy."""
    doc = _compose()
    secrets = tmp_path / "secrets"
    make_secrets(secrets, ACL_USERS)
    port = free_port()
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')   # the image's entry point
    (stub / "docker-entrypoint.sh").chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    redis_env = dict(os.environ, PATH=f"{stub}{os.pathsep}{os.path.dirname(REDIS_SERVER)}{os.pathsep}"
                     + os.environ["PATH"], REDISMEDIAN_SECRETS_DIR=str(secrets),
                     REDISMEDIAN_ACL_OUT=str(tmp_path / "users.acl"))
    entry = doc["services"]["redis"]["entrypoint"]
    script = str(DEPLOY / "redis" / Path(entry[1]).name)
    redis_proc = subprocess.Popen([entry[0], script, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                   "--logfile", str(tmp_path / "redis.log")], env=redis_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs: list[Proc] = []

    def local(value: str) -> str:
        return str(value).replace("redis:6379", f"127.0.0.1:{port}").replace("/run/secrets/", f"{secrets}/")

    def service_env(svc: dict, metrics_port: int) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
        env.update({k: local(v) for k, v in svc["environment"].items()})
        env.update(REDISMEDIAN_PERIOD="0.5", REDISMEDIAN_METRICS_PORT=str(metrics_port), PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT))
        return env
    try:
        hc = doc["services"]["redis"]["healthcheck"]["test"]
        assert hc[0] == "CMD-SHELL"
        shell = local(hc[1]).replace("$$", "$").replace("redis-cli ", f"redis-cli -p {port} ")
        wait_until(lambda: subprocess.run(["sh", "-c", shell], capture_output=True).returncode == 0, 15,
                   what="the redis service's healthcheck")
        envs = {}
        for name, svc in doc["services"].items():
            if name in ("redis", "operator", "web"):   # web: tests/integration/test_web.py runs the page server
                continue
            envs[name] = service_env(svc, free_port())
            procs.append(Proc(svc["command"], envs[name], tmp_path / f"{name}.log", name=name))

        last = {}

        def healthy(name):
            test = doc["services"][name]["healthcheck"]["test"]
            r = subprocess.run([sys.executable, "-m", "redismedian", *test[2:]], env=envs[name], cwd=str(ROOT),
                               capture_output=True, text=True, timeout=30)
            last[name] = (r.stdout + r.stderr).strip()
            return r.returncode == 0
        for name in envs:
            try:
                wait_until(lambda: healthy(name), 20, interval=0.2, what=f"the {name} service's healthcheck")
            except AssertionError as e:
                raise AssertionError(f"{e}; last check said: {last.get(name)}") from None
        op = doc["services"]["operator"]
        r = subprocess.run([sys.executable, "-m", "redismedian", "check"], env=service_env(op, 0), cwd=str(ROOT),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        admin = harness_client(port, username="admin", password=(secrets / "admin").read_text().strip())
        _assert_only_meta_refusals(admin, {p: urlsplit(envs[p.name]["REDISMEDIAN_REDIS_URL"]).username
                                           for p in procs if p.name != "trader"}, procs)
        # Logs are JSON, as configured, and carry no password.
        out = "".join(p.output() for p in procs)
        assert out and all(line.startswith("{") for line in out.splitlines() if line.strip())
        for pw in (secrets / u for u in ACL_USERS):
            assert pw.read_text().strip() not in out
        assert oct((tmp_path / "users.acl").stat().st_mode & 0o777) == "0o600"
        assert (data / "appendonlydir").is_dir(), "AOF persistence is on"
    finally:
        for p in procs:
            p.stop()
        if redis_proc.poll() is None:
            redis_proc.kill()
        redis_proc.wait(10)


# -- Dockerfile -----------------------------------------------------------------------------------
def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_package_runs_unprivileged_and_bakes_no_secret():
    import json
    inst = _dockerfile()
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD", "ARG", "LABEL", "EXPOSE",
             "HEALTHCHECK"}
    assert {w for w, _ in inst} <= known
    assert inst[0][0] == "FROM" and re.match(r"python:3\.(\d+)-slim$", inst[0][1])
    pyproject = _pyproject()
    minor = int(re.match(r"python:3\.(\d+)", inst[0][1]).group(1))
    assert minor >= int(pyproject["requires-python"].split(".")[1])
    for word, rest in inst:
        if word == "COPY":
            *sources, _dest = rest.split()
            for s in sources:
                assert (ROOT / s).exists(), f"COPY {s}: not in the build context"
        if word in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|REDIS_URL", rest, re.I), f"{word} {rest}"
    assert any(w == "RUN" and "pip install ." in r for w, r in inst)
    users = [r for w, r in inst if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = json.loads([r for w, r in inst if w == "ENTRYPOINT"][-1])
    assert entry == ["redismedian"] and "redismedian" in pyproject["scripts"]
    cmd = json.loads([r for w, r in inst if w == "CMD"][-1])
    with pytest.raises(click.exceptions.Exit):   # `redismedian --help` prints help and exits 0
        cli.make_context("redismedian", cmd)
    # The build context leaves out secrets and local state, but keeps what pip needs.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"deploy", ".git", ".venv"} <= ignored
    assert not ({"README.md", "pyproject.toml", "redismedian"} & ignored)


# -- systemd --------------------------------------------------------------------------------------
def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def _values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def _instances():
    """(unit file, instance name or None, kind) for the original topology."""
    for kind, names in TOPOLOGY.items():
        for n in names:
            yield SYSTEMD / f"redismedian-{kind}@.service", n, kind
    yield SYSTEMD / "redismedian-trader.service", None, "trader"


def _local_env_file(path: str) -> Path:
    assert path.startswith("/etc/redismedian/")
    return SYSTEMD / "env" / path[len("/etc/redismedian/"):]


def test_systemd_units_call_real_commands_with_real_options():
    assert sorted(p.name for p in SYSTEMD.glob("*.service")) == [
        "redismedian-generator@.service", "redismedian-strategy@.service", "redismedian-trader.service",
        "redismedian-web.service"]   # web: tests/integration/test_web.py
    pyproject = _pyproject()
    for path, inst, kind in _instances():
        unit = _unit(path)
        sub = (lambda v: v.replace("%i", inst)) if inst else (lambda v: v)
        assert _values(unit, "Service", "Restart") == ["on-failure"]
        assert _values(unit, "Install", "WantedBy") == ["multi-user.target"]
        (exec_start,) = _values(unit, "Service", "ExecStart")
        argv = shlex.split(sub(exec_start))
        assert argv[0] == "/opt/redismedian/bin/redismedian" and Path(argv[0]).name in pyproject["scripts"]
        env: dict[str, str] = {}
        for f in _values(unit, "Service", "EnvironmentFile"):
            local = _local_env_file(sub(f))
            assert local.is_file(), f"{path.name}: example {local.name} missing"
            env.update(_env_file(local))
        # The password: a systemd credential read through REDISMEDIAN_PASSWORD_FILE, never the environment.
        (cred,) = _values(unit, "Service", "LoadCredential")
        cred_name, _, cred_path = sub(cred).partition(":")
        user = urlsplit(env["REDISMEDIAN_REDIS_URL"]).username
        assert cred_path == f"/etc/redismedian/secrets/{user}" and user in ACL_USERS
        assert _values(unit, "Service", "Environment") == [f"REDISMEDIAN_PASSWORD_FILE=%d/{cred_name}"]
        assert urlsplit(env["REDISMEDIAN_REDIS_URL"]).password is None and "REDISMEDIAN_PASSWORD" not in env
        cmd, ctx = parse_cli(argv[1:], env)
        assert argv[1] == kind
        assert user == (kind if kind == "trader" else f"{kind}.{inst}")
        assert set(env) <= envvars(cmd), f"{path.name}: unknown variables {set(env) - envvars(cmd)}"
        if kind == "strategy":
            assert ctx.params["signals"] == {"X": ["g1"], "Y": ["g2", "g3"]}[inst]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    stub = tmp_path / "redismedian"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    names = []
    for path in SYSTEMD.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/redismedian/bin/redismedian", str(stub)))
        names.append(str(tmp_path / path.name.replace("@.", "@g1.")))
    r = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_systemd_units_run_without_systemd(tmp_path):
    """Each unit's ExecStart with its environment files and credential, as systemd would run it."""
    from tests.prod_support import acl_server
    server, pw = acl_server(tmp_path)
    procs = []
    users = {}     # generator and strategy processes -> their ACL users
    try:
        checks = []
        for path, inst, kind in _instances():
            unit = _unit(path)
            sub = (lambda v: v.replace("%i", inst)) if inst else (lambda v: v)
            env = {k: v for k, v in os.environ.items() if not k.startswith("REDISMEDIAN_")}
            for f in _values(unit, "Service", "EnvironmentFile"):
                env.update(_env_file(_local_env_file(sub(f))))
            creds = tmp_path / "credentials" / (inst or kind)      # what systemd gives as %d
            creds.mkdir(parents=True)
            cred_name, _, cred_path = sub(_values(unit, "Service", "LoadCredential")[0]).partition(":")
            (creds / cred_name).write_text(pw[Path(cred_path).name] + "\n")
            for e in _values(unit, "Service", "Environment"):
                k, _, v = e.partition("=")
                env[k] = v.replace("%d", str(creds))
            env["REDISMEDIAN_REDIS_URL"] = env["REDISMEDIAN_REDIS_URL"].replace("127.0.0.1:6379",
                                                                                f"127.0.0.1:{server.port}")
            env.update(REDISMEDIAN_PERIOD="0.5", REDISMEDIAN_METRICS_PORT=str(free_port()), PYTHONPATH=str(ROOT),
                       PYTHONUNBUFFERED="1")
            argv = shlex.split(sub(_values(unit, "Service", "ExecStart")[0]))
            procs.append(Proc(argv[1:], env, tmp_path / f"{inst or kind}.log", name=inst or kind))
            checks.append((["check", kind] + ([inst] if inst else []), env))
            if inst:
                users[procs[-1]] = f"{kind}.{inst}"
        for args, env in checks:
            wait_until(lambda: subprocess.run([sys.executable, "-m", "redismedian", *args], env=env, cwd=str(ROOT),
                                              capture_output=True, timeout=30).returncode == 0,
                       20, interval=0.2, what=" ".join(args))
        _assert_only_meta_refusals(server.client(), users, procs)
    finally:
        for p in procs:
            p.stop()
        server.kill()


def _assert_only_meta_refusals(admin, users: dict, procs: list) -> None:
    """Nothing exited, and nothing was refused: compose and systemd start every component at once, so
    generators and strategies (``users``: process -> its ACL user) may run before the trader loaded the
    scripts and created the deployment record (NS:meta).  Their users may do neither, and under a
    named ACL user they do not ask (Redis' ACL LOG stays empty): each logs at most once that it waits
    for the scripts and once for the record, and goes on once the trader has run."""
    assert all(p.alive() for p in procs), [(p.name, p.output()[-2000:]) for p in procs if not p.alive()]
    entries = [{_as_text(k): _as_text(v) for k, v in zip(e[::2], e[1::2])} for e in admin.execute_command("ACL", "LOG")]
    assert entries == [], entries
    for p, user in users.items():
        lines = [ln for ln in p.output().splitlines() if "recovered from" not in ln]
        for what in ("waiting for the deployment record redismedian:meta", "waiting for the trader to load"):
            assert sum(what in ln for ln in lines) <= 1, (p.name, what, p.output()[-2000:])
        # Its start-up, tried again once the record exists, keeps the name lease it took the first
        # time: it never waits for its own lease to expire.
        assert not any(" is held by " in ln for ln in lines), (p.name, p.output()[-2000:])


def _as_text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# -- helper scripts -------------------------------------------------------------------------------
def test_make_secrets_creates_one_private_password_per_user(tmp_path):
    out = tmp_path / "secrets"
    r = subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(ACL_TEMPLATE), str(out)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(ACL_USERS + ["web-token"]) and "default" not in files
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    passwords = {(out / f).read_text().strip() for f in files}
    assert len(passwords) == len(files) and all(re.fullmatch(r"[A-Za-z0-9]{32}", p) for p in passwords)
    for p in passwords:
        assert p not in r.stdout + r.stderr
    before = (out / "trader").read_text()
    r = subprocess.run(["sh", str(DEPLOY / "make-secrets.sh"), str(ACL_TEMPLATE), str(out)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and (out / "trader").read_text() == before and "created" not in r.stdout


def test_redis_conf_persists_and_never_evicts():
    conf = {}
    for line in REDIS_CONF.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition(" ")
            conf[k] = v.strip()
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert "aclfile" not in conf and "requirepass" not in conf   # no secret path or password in the file
    # That the real redis-server loads it: every ACL, TLS and compose test starts Redis with it.
