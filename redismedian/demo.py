"""``redismedian demo``: the original topology as child processes, with a Redis if none answers."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import FrameType
from typing import IO, TYPE_CHECKING

import redis

from .connection import ErrorKind, classify, describe_error, make_client, redact_url
from .health import live_parts
from .keys import Keys

if TYPE_CHECKING:
    from fakeredis import TcpFakeServer

TOPOLOGY = [
    ("g1", ["generator", "--name", "g1"]),
    ("g2", ["generator", "--name", "g2"]),
    ("g3", ["generator", "--name", "g3"]),
    ("trader", ["trader"]),
    ("X", ["strategy", "--name", "X", "--signals", "g1"]),
    ("Y", ["strategy", "--name", "Y", "--signals", "g2,g3"]),
]
# The strategies start once every generator has written a signal and the trader leads: their first
# decision then has its signals, and the trader (the registrar) admits them at its next period
# boundary, so the output reads in order instead of opening with errors about parts not started yet.
FIRST = [name for name, args in TOPOLOGY if args[0] != "strategy"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, namespace: str | None = None) -> bool:
    try:
        make_client(url, socket_timeout=1.0, namespace=namespace).ping()
        return True
    except Exception as e:  # noqa: BLE001
        if classify(e) in (ErrorKind.AUTH, ErrorKind.PERMISSION):
            raise SystemExit(f"demo: Redis at {redact_url(url)} refused our credentials: {describe_error(e)}") from None
        return False


class PrivateRedis:
    """A throw-away Redis on a free loopback port: redis-server if installed, else fakeredis."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: TcpFakeServer | None = None
        self.tmp = tempfile.mkdtemp(prefix="redismedian-demo-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.kind = ""

    def start(self) -> "PrivateRedis":
        binary = shutil.which("redis-server")
        if binary:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.tmp, "--logfile", os.path.join(self.tmp, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.kind = f"redis-server (pid {self.proc.pid})"
        else:
            from fakeredis import TcpFakeServer
            self.server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            self.kind = "fakeredis TCP server (redis-server is not installed)"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if redis_answers(self.url):
                return self
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"demo: could not start a private Redis ({self.kind}); see {self.tmp}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.server is not None:
            self.server.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pump(name: str, stream: IO[bytes], lock: threading.Lock) -> None:
    width = max(len(n) for n, _ in TOPOLOGY)
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        with lock:
            print(f"[{name:>{width}}] {line}", flush=True)


def clear_namespace(url: str, namespace: str) -> int:
    client = make_client(url, namespace=namespace)
    n = 0
    for key in client.scan_iter(match=Keys.for_url(namespace, url).pattern, count=1000):
        client.unlink(key)
        n += 1
    return n


def _first_ready(client: redis.Redis, namespace: str, url: str) -> bool:
    """Every generator wrote a signal and a trader leads (False while Redis does not answer)."""
    k = Keys.for_url(namespace, url)
    want = [k.signal(name) for name, args in TOPOLOGY if args[0] == "generator"] + [k.lease("trader")]
    try:
        return client.exists(*want) == len(want)
    except Exception:  # noqa: BLE001 - not ready yet; a dead child is reported by the loop
        return False


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (signal {-code})"
    return f"exited with status {code}"


def refuse_if_alive(client: redis.Redis, namespace: str, url: str) -> bool:
    """True (after saying who) when live components hold the namespace: a demo never clears or
    joins a namespace that running components use (their leases, or a fresh trader heartbeat)."""
    live = live_parts(client, Keys.for_url(namespace, url))
    if not live:
        return False
    print(f"demo: namespace {namespace!r} at {redact_url(url)} is in use; refusing to start (nothing was "
          "changed). Live components there:", file=sys.stderr, flush=True)
    for part in live:
        print(f"demo:   {part}", file=sys.stderr, flush=True)
    print("demo: stop them first (Ctrl-C in the demo that runs them), or give this demo another --namespace. "
          "A part that died holds its name until its lease expires (a few periods).", file=sys.stderr, flush=True)
    return True


def run_demo(redis_url: str, namespace: str, period_ms: int, duration: float | None, log_level: str) -> int:
    private = None
    if redis_answers(redis_url, namespace):
        url = redis_url
        print(f"demo: using the Redis at {redact_url(url)}, namespace {namespace!r}", flush=True)
        if refuse_if_alive(make_client(url, socket_timeout=5.0, namespace=namespace), namespace, url):
            return 1
    else:
        private = PrivateRedis().start()
        url = private.url
        print(f"demo: no Redis answered at {redact_url(redis_url)}; started a private {private.kind} at {url}",
              flush=True)
    if clear_namespace(url, namespace):
        print(f"demo: cleared the keys left in namespace {namespace!r} by an earlier demo", flush=True)
    where = f"--redis-url {redact_url(url)} --namespace {namespace}"
    print(f"demo: period {period_ms / 1000:g}s. Watch `redismedian status {where}` in another terminal; "
          "Ctrl-C stops everything.", flush=True)

    env = dict(os.environ, REDISMEDIAN_REDIS_URL=url, REDISMEDIAN_NAMESPACE=namespace,
               REDISMEDIAN_PERIOD=str(period_ms / 1000), REDISMEDIAN_LOG_LEVEL=log_level,
               PYTHONUNBUFFERED="1")
    lock = threading.Lock()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    reported: set[int] = set()       # children whose exit we reported
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)

    def start(names: list[str]) -> None:
        started = []
        for name, args in TOPOLOGY:
            if name in names:
                proc = subprocess.Popen([sys.executable, "-m", "redismedian", *args], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
                threading.Thread(target=_pump, args=(name, proc.stdout, lock), daemon=True).start()
                children.append((name, proc))
                started.append(f"{name} (pid {proc.pid})")
        with lock:
            print(f"demo: started {', '.join(started)}", flush=True)

    client = make_client(url, socket_timeout=2.0, namespace=namespace)
    rest = [name for name, _ in TOPOLOGY if name not in FIRST]
    strategies = set(rest)
    try:
        end = None if duration is None else time.monotonic() + duration
        with lock:
            print("demo: starting the generators and the trader", flush=True)
        start(FIRST)
        # Not forever: after this, the strategies start anyway (and report what they miss).
        first_deadline = time.monotonic() + max(20.0, 5 * period_ms / 1000)
        while not stopping.wait(0.2 if not rest else 0.05):
            if end is not None and time.monotonic() >= end:
                break
            if rest and (_first_ready(client, namespace, url) or time.monotonic() >= first_deadline):
                with lock:
                    print("demo: starting the strategies; the trader registers each one at its next period "
                          "boundary", flush=True)
                start(rest)
                rest = []
            # A child that exits is reported, and the demo goes on: the others show what follows.
            for name, proc in children:
                if proc.pid in reported or proc.poll() is None:
                    continue
                reported.add(proc.pid)
                hint = ""
                if name in strategies:
                    hint = (f". Unless it was deregistered, the trader reports it missing until it is back or "
                            f"deregistered (`redismedian deregister {name} {where}`)")
                with lock:
                    print(f"demo: {name} (pid {proc.pid}) {_describe_exit(proc.returncode)}{hint}. The other parts "
                          "keep running; Ctrl-C stops the demo.", flush=True)
    finally:
        print("demo: stopping", flush=True)
        for _, p in children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, p in children:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if private is not None:
            private.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        print("demo: stopped", flush=True)
    return 0
