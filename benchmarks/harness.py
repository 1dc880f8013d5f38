"""What every benchmark needs: a private Redis, component processes, the server clock,
per-process CPU and memory, and a proxy that counts the commands one process sends.

Everything runs on 127.0.0.1: the private ``redis-server`` is started on a free loopback
port in a temporary folder and killed at the end; the machine's shared Redis is never used.
"""
from __future__ import annotations

import os
import platform
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import hiredis
import redis

from redismedian.clock import ServerClock, boundary_ms
from tests.support import REDIS_SERVER, RedisServer  # noqa: F401 - used by __main__

ROOT = Path(__file__).resolve().parent.parent


# -- the server clock, seen from the benchmark ---------------------------------------------
class BenchClock:
    """The Redis server's clock (like every component's), to wake at period boundaries."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.clock = ServerClock()
        self.resync()

    def resync(self) -> None:
        # The smallest round trip gives the best offset.
        best = None
        for _ in range(5):
            sent = time.monotonic()
            sec, usec = self.client.time()
            rtt = time.monotonic() - sent
            if best is None or rtt < best[0]:
                best = (rtt, int(sec) * 1000 + int(usec) // 1000, sent)
        self.clock.observe(best[1], best[2])

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def sleep_until(self, server_ms: float) -> None:
        delay = (server_ms - self.clock.now_ms()) / 1000.0
        if delay > 0:
            time.sleep(delay)

    def next_boundary(self, period_ms: int, offset_ms: float = 0.0) -> int:
        """Sleep until ``offset_ms`` after the next period boundary; returns that epoch."""
        epoch = self.clock.now_ms() // period_ms + 1
        self.sleep_until(boundary_ms(epoch, period_ms) + offset_ms)
        return epoch


# -- component processes -------------------------------------------------------------------
class Component:
    """One ``python -m redismedian <kind> ...`` child process (or another ``module``), its output in a
    log file."""

    def __init__(self, label: str, args: list[str], env: dict[str, str], logdir: Path,
                 module: str = "redismedian"):
        self.label = label
        self.kind = args[0] if module == "redismedian" else module.rsplit(".", 1)[-1]
        self.log_path = Path(logdir) / f"{label}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=str(ROOT),
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 5.0) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class Topology:
    """Starts components against one Redis, and stops them all."""

    def __init__(self, redis_url: str, namespace: str, period_s: float, logdir: Path):
        self.redis_url = redis_url
        self.namespace = namespace
        self.period_s = period_s
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.components: list[Component] = []
        self.helpers: list[Component] = []

    def env(self, redis_url: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(REDISMEDIAN_REDIS_URL=redis_url or self.redis_url, REDISMEDIAN_NAMESPACE=self.namespace,
                   REDISMEDIAN_PERIOD=repr(self.period_s), REDISMEDIAN_LOG_LEVEL="WARNING",
                   PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        return env

    def start(self, label: str, *args: str, redis_url: str | None = None) -> Component:
        c = Component(label, list(args), self.env(redis_url), self.logdir)
        self.components.append(c)
        return c

    def start_helper(self, label: str, module: str, *args: str) -> Component:
        """A benchmark process beside the components (stopped with them, not counted among them)."""
        c = Component(label, list(args), self.env(), self.logdir, module=module)
        self.helpers.append(c)
        return c

    def original(self, url_for=lambda label: None) -> None:
        """The original topology: g1, g2, g3; the trader; X on g1 and Y on g2,g3."""
        for g in ("g1", "g2", "g3"):
            self.start(g, "generator", "--name", g, redis_url=url_for(g))
        self.start("trader", "trader", redis_url=url_for("trader"))
        self.start("X", "strategy", "--name", "X", "--signals", "g1", redis_url=url_for("X"))
        self.start("Y", "strategy", "--name", "Y", "--signals", "g2,g3", redis_url=url_for("Y"))

    def check_alive(self) -> None:
        dead = [c for c in self.components + self.helpers if not c.alive()]
        if dead:
            c = dead[0]
            raise RuntimeError(f"component {c.label} exited with {c.proc.returncode}:\n{c.tail()}")

    def stop(self) -> None:
        everything = self.components + self.helpers
        for c in everything:
            c.terminate()
        for c in everything:
            c.wait()
        self.components.clear()
        self.helpers.clear()


# -- CPU and memory of a process -------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of ``pid`` (nanosecond scheduler accounting when available)."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# -- counting the round trips (and commands) a process makes -------------------------------------
class _Link:
    """One proxied client connection: its upstream socket and what is in flight on it."""

    def __init__(self, label: str, client: socket.socket, upstream: socket.socket):
        self.label = label
        self.client = client
        self.upstream = upstream
        self.requests = hiredis.Reader()   # commands are RESP arrays (redis-py sends nothing inline)
        self.replies = hiredis.Reader()
        self.outstanding = 0               # commands sent whose reply has not been forwarded yet


class CountingProxy:
    """A loopback TCP proxy to Redis for the processes of one label; counts the round trips and the
    commands they send.

    A round trip is a batch of commands that a client sends before it waits for their replies: one
    command, or a pipeline (the trader's read, ``GET``, ``HGET``, ``SCARD`` and ``MGET``, is one round trip with four commands).
    The proxy parses both directions: a batch starts when a client sends a command while none of its
    earlier commands is still unanswered.  Before the proxy forwards the reply that completes a batch,
    it first takes in whatever the client has already sent: the client cannot have read a reply that
    has not been forwarded yet, so those commands belong to the same batch (redis-py writes a pipeline
    in several pieces, and Redis may answer the first command before the last one arrived).
    The benchmark checks the command counts against the server's own ``INFO commandstats``.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listeners: dict[str, socket.socket] = {}
        self.counts: dict[str, Counter] = {}      # label -> commands by name
        self.trips: Counter = Counter()           # label -> round trips
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="counting-proxy", daemon=True)
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))

    def url_for(self, label: str) -> str:
        """A redis:// URL whose connections are counted under ``label``."""
        lst = socket.create_server(("127.0.0.1", 0))
        lst.setblocking(False)
        self.listeners[label] = lst
        self.counts[label] = Counter()
        self.trips[label] = 0
        self.sel.register(lst, selectors.EVENT_READ, ("accept", label))
        self._wake_w.send(b"x")
        return f"redis://127.0.0.1:{lst.getsockname()[1]}/0"

    def start(self) -> "CountingProxy":
        self.thread.start()
        return self

    def snapshot(self) -> dict[str, tuple[int, Counter]]:
        """label -> (round trips, commands by name), so far."""
        with self.lock:
            return {label: (self.trips[label], Counter(c)) for label, c in self.counts.items()}

    def close(self) -> None:
        self.stop_flag.set()
        self._wake_w.send(b"x")
        self.thread.join(5)
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()

    def _loop(self) -> None:
        while not self.stop_flag.is_set():
            for key, _mask in self.sel.select(timeout=1.0):
                self._dispatch(key.fileobj, key.data)

    def _dispatch(self, sock: socket.socket, data: tuple) -> None:
        """One readiness event.  It may be stale: a reply earlier in the same select batch may already
        have taken in what a client sent (see _from_server), so no read here ever blocks, or every
        proxied process would stall until that client sent again (a smoke run under load once saw the
        whole pipeline stop for two periods)."""
        what, arg = data
        if what == "wake":
            sock.recv(4096)
        elif what == "accept":
            self._accept(sock, arg)
        elif what == "client":
            self._from_client(arg)
        else:
            self._from_server(arg)

    def _accept(self, lst: socket.socket, label: str) -> None:
        try:
            client, _ = lst.accept()
        except BlockingIOError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(True)
        link = _Link(label, client, upstream)
        self.sel.register(client, selectors.EVENT_READ, ("client", link))
        self.sel.register(upstream, selectors.EVENT_READ, ("server", link))

    def _close(self, link: _Link) -> None:
        for s in (link.client, link.upstream):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def _requests(self, link: _Link, chunk: bytes) -> None:
        """Count the commands in ``chunk`` (client -> server) and forward it."""
        new_batch = link.outstanding == 0 and not link.requests.has_data()
        link.requests.feed(chunk)
        names = []
        while True:
            cmd = link.requests.gets()
            if cmd is False:
                break
            names.append(bytes(cmd[0]).decode(errors="replace").upper() if cmd else "")
        with self.lock:
            if new_batch:
                self.trips[link.label] += 1
            self.counts[link.label].update(names)
        link.outstanding += len(names)
        link.upstream.sendall(chunk)

    def _from_client(self, link: _Link) -> bool:
        """Take in what the client sent, if anything (never waits); False when there was nothing."""
        try:
            chunk = link.client.recv(1 << 16, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._close(link)
            return False
        try:
            self._requests(link, chunk)
        except OSError:
            self._close(link)
            return False
        return True

    def _from_server(self, link: _Link) -> None:
        try:
            chunk = link.upstream.recv(1 << 16, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(link)
            return
        link.replies.feed(chunk)
        done = 0
        while link.replies.gets() is not False:
            done += 1
        if done and done >= link.outstanding:
            # This chunk completes the batch: take in what the client sent meanwhile first (it has not
            # seen these replies yet, so it is still the same batch).
            while link.client.fileno() >= 0 and self._from_client(link):
                pass
        link.outstanding = max(0, link.outstanding - done)
        try:
            link.client.sendall(chunk)
        except OSError:
            self._close(link)


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command as counted by the server (``INFO commandstats``), e.g. {'evalsha': 12}."""
    stats = client.info("commandstats")
    return {name[len("cmdstat_"):]: int(v["calls"]) for name, v in stats.items()}


# -- the machine -------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    server = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout.strip() \
        if REDIS_SERVER else "redis-server not installed"
    return {
        "host": platform.node(), "os": f"{platform.system()} {platform.release()}", "cpu": cpu,
        "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
        "redis_server": server.split(" sha=")[0], "redis_py": redis.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
