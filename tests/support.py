"""Real parts for integration tests: a private redis-server and component processes.

Nothing here touches the machine's shared Redis: every server is started on a free
loopback port in a temporary folder and killed at the end of the test.
"""
from __future__ import annotations

import os
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

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """A redis-server child process on a free loopback port."""

    def __init__(self, workdir: Path, port: int | None = None, appendonly: bool = False,
                 extra: list[str] | None = None):
        if not REDIS_SERVER:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
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
        return [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(self._answers, timeout, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}: "
                                 + (self.dir / "redis.log").read_text()[-2000:])
        try:
            return bool(self.client(socket_timeout=0.5).ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
        except redis.exceptions.BusyLoadingError:
            return False

    def client(self, **kw) -> redis.Redis:
        kw.setdefault("socket_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

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
