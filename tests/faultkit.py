"""Fault-injection harness: a known topology, a watcher that records every published median,
the invariant every fault run is checked against, and recovery-time measurement.

The topology uses the deterministic plug-ins of ``tests/plugins.py``, so the exact decision of
every strategy in every epoch, and so the exact median, is known in advance:

    generators  g1 = sig_a, g2 = sig_b, g3 = sig_c
    strategies  X on g1, Y on g2,g3, Z on g1,g3   (default decide: the mean of the signals)

The invariant, checked over everything a run published to ``NS:medians``:

* every entry's median is exactly the median of its members' same-epoch decisions;
* its members are exactly the registered strategies (all of X, Y, Z once they registered):
  no median is ever published while a registered strategy is missing;
* no epoch appears twice (across Redis restarts and failovers too: the watcher keeps history).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import redis

from redismedian.connection import make_client
from tests import plugins
from tests.support import Cluster, Proc, wait_until

NS = "t"
GENERATORS = {"g1": "sig_a", "g2": "sig_b", "g3": "sig_c"}
STRATEGIES = {"X": ["g1"], "Y": ["g2", "g3"], "Z": ["g1", "g3"]}
ALL = frozenset(STRATEGIES)


def decision(strategy: str, epoch: int) -> float:
    """What ``strategy`` submits for ``epoch`` (redismedian.strategy.default_decide on the plug-ins)."""
    values = [plugins.SIGNALS[GENERATORS[g]](epoch) for g in STRATEGIES[strategy]]
    return sum(values) / len(values)


def expected_median(epoch: int, members) -> float:
    return statistics.median([decision(s, epoch) for s in members])


@dataclass
class Entry:
    epoch: int
    median: str
    count: int
    members: tuple
    fence: int
    ts: int
    instance: str


class MedianWatcher(threading.Thread):
    """Polls ``NS:medians`` in the background and keeps every entry, across Redis restarts
    (a new deployment record), failovers and hangs; errors while Redis is away are ignored."""

    def __init__(self, url: str, ns: str = NS, interval: float = 0.05):
        super().__init__(daemon=True)
        self.url, self.ns, self.interval = url, ns, interval
        self.entries: list[Entry] = []
        self._ids: set = set()
        self._halt = threading.Event()
        self._last = "-"
        self._inst = None
        self.last_error = ""
        self.polls = 0
        self.lock = threading.Lock()

    def client(self):
        return make_client(self.url, socket_timeout=1.0)

    def run(self) -> None:
        client = None
        while not self._halt.is_set():
            try:
                client = client or self.client()
                self.poll(client)
                self.polls += 1
            except redis.exceptions.ResponseError as e:
                self.last_error = repr(e)   # somebody turned the stream into another type: repaired
            except Exception as e:  # noqa: BLE001 - Redis away, hung or failing over: try again
                self.last_error = repr(e)
                client = None
            self._halt.wait(self.interval)

    def poll(self, client) -> None:
        inst = client.hget(f"{self.ns}:meta", "instance")
        if inst != self._inst:
            self._inst, self._last = inst, "-"
        start = "-" if self._last == "-" else "(" + self._last
        for entry_id, f in client.xrange(f"{self.ns}:medians", min=start, max="+"):
            eid = entry_id.decode()
            self._last = eid
            # Entry ids are the server's time: a new dataset (Redis restarted empty) has new ones, a
            # failover keeps them.  A new instance id alone (garbage in NS:meta) re-reads the same
            # stream: the same ids, skipped here, so that only a second XADD counts as a duplicate.
            if eid in self._ids:
                continue
            self._ids.add(eid)
            g = {k.decode(): v.decode(errors="replace") for k, v in f.items()}
            e = Entry(int(g["epoch"]), g["median"], int(g["count"]),
                      tuple(m for m in g.get("members", "").split(",") if m), int(g.get("fence") or 0),
                      int(g["ts"]), (inst or b"").decode())
            with self.lock:
                self.entries.append(e)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def snapshot(self) -> list[Entry]:
        with self.lock:
            return list(self.entries)

    def last_epoch(self) -> int | None:
        s = self.snapshot()
        return s[-1].epoch if s else None

    def first_after(self, ts_ms: float) -> Entry | None:
        for e in self.snapshot():
            if e.ts >= ts_ms:
                return e
        return None

    def wait_for_median_after(self, ts_ms: float, timeout: float, what: str = "a median") -> Entry:
        return wait_until(lambda: self.first_after(ts_ms), timeout, interval=0.02, what=what)


def check_invariant(entries: list[Entry], complete_from_ms: float | None = 0) -> list[str]:
    """Every problem with what was published (an empty list when all is right).

    ``complete_from_ms``: from this server time on every strategy of the topology is registered,
    so each entry must list all of them; before it (start-up) an entry may list fewer, but its
    median must still be exactly its members' median.
    """
    problems = []
    seen: dict[int, Entry] = {}
    for e in entries:
        if e.epoch in seen:
            problems.append(f"epoch {e.epoch} published twice (fences {seen[e.epoch].fence} and {e.fence})")
        seen[e.epoch] = e
        members = set(e.members)
        if not members <= ALL or len(members) != e.count:
            problems.append(f"epoch {e.epoch}: members {e.members} / count {e.count} are not strategies we run")
            continue
        if complete_from_ms is not None and e.ts >= complete_from_ms and members != ALL:
            missing = ", ".join(sorted(ALL - members))
            problems.append(f"epoch {e.epoch}: published without registered strategy {missing}")
        want = expected_median(e.epoch, members)
        if float(e.median) != want:
            problems.append(f"epoch {e.epoch}: median {e.median} over {e.members}, expected {want!r}")
    epochs = [e.epoch for e in entries]
    if epochs != sorted(epochs):
        problems.append(f"epochs published out of order: {epochs}")
    return problems


def now_ms() -> float:
    """The Redis servers of these tests run on this machine: their clock is this clock."""
    return time.time() * 1000.0


@dataclass
class Topology:
    """The fault-test deployment: generators, strategies and traders as real processes."""

    cluster: Cluster
    period: float
    procs: dict = field(default_factory=dict)
    traders: list = field(default_factory=list)
    watcher: MedianWatcher | None = None
    complete_ms: float | None = None

    @property
    def url(self) -> str:
        return self.cluster.redis_url

    def start(self, traders: int = 1, wait: bool = True, trader_args: tuple = ()) -> "Topology":
        for g, sig in GENERATORS.items():
            self.procs[g] = self.cluster.generator(g, f"tests.plugins:{sig}")
        for s, gens in STRATEGIES.items():
            self.procs[s] = self.cluster.strategy(s, ",".join(gens))
        self.watcher = MedianWatcher(self.url)
        self.watcher.start()
        if wait:
            self.wait_registered()
        for _ in range(traders):
            self.add_trader(*trader_args)
        return self

    def add_trader(self, *args) -> Proc:
        p = self.cluster.trader(*args)
        self.traders.append(p)
        return p

    def client(self, **kw):
        return make_client(self.url, socket_timeout=kw.pop("socket_timeout", 2.0), **kw)

    def wait_registered(self, timeout: float = 30) -> None:
        c = self.client()
        wait_until(lambda: {m.decode() for m in c.smembers(f"{NS}:strategies")} == set(ALL), timeout,
                   what="every strategy registered")
        if self.complete_ms is None:
            self.complete_ms = now_ms()

    def restart(self, name: str) -> Proc:
        """Start a fresh process with the same command line as ``name``'s."""
        old = self.procs[name]
        p = self.cluster.start(*old.args, name=name)
        self.procs[name] = p
        return p

    def wait_up(self, proc: Proc, timeout: float = 60) -> float:
        """Wait until a (re)started process is running: it logged its start line (a generator or
        strategy after taking its name).  Returns that moment (ms).  Interpreter start-up on a
        loaded machine can take seconds: recovery is measured from here."""
        proc.wait_for_output(r"(generator \S+ started|registered \S+ \(signals|trader started)", timeout)
        return now_ms()

    def periods(self, ms: float) -> float:
        return ms / 1000.0 / self.period

    def wait_periods(self, n: float) -> None:
        """Let ``n`` periods pass (the length of a fault, not a wait for a result)."""
        time.sleep(n * self.period)

    def recovery(self, back_ms: float, timeout_periods: float = 20, what: str = "a median after recovery") -> float:
        """Periods from ``back_ms`` (the failed part is back) to the first median published after it."""
        e = self.watcher.wait_for_median_after(back_ms, timeout_periods * self.period, what=what)
        return self.periods(e.ts - back_ms)

    def trader_hash(self) -> dict:
        return {k.decode(): v.decode(errors="replace") for k, v in self.client().hgetall(f"{NS}:trader").items()}

    def wait_trader_error(self, *names: str, timeout_periods: float = 12) -> str:
        """Wait until the trader reports ``error`` naming every strategy in ``names``; its reason."""
        def check():
            h = self.trader_hash()
            r = h.get("reason", "")
            return r if h.get("state") == "error" and all(f"{n}:" in r for n in names) else None
        return wait_until(check, timeout_periods * self.period, interval=0.05,
                          what=f"trader error naming {', '.join(names)}")

    def check(self) -> list[str]:
        return check_invariant(self.watcher.snapshot(), self.complete_ms)

    def close(self) -> None:
        if self.watcher:
            self.watcher.stop()

    def alive(self) -> dict:
        return {n: p.alive() for n, p in self.procs.items()}


def assert_invariant(topo: Topology, min_entries: int = 1) -> list[Entry]:
    entries = topo.watcher.snapshot()
    problems = check_invariant(entries, topo.complete_ms)
    assert not problems, "invariant broken:\n" + "\n".join(problems[:20])
    assert len(entries) >= min_entries, (f"only {len(entries)} medians seen (watcher: {topo.watcher.polls} polls, "
                                         f"last error {topo.watcher.last_error or 'none'})")
    return entries


def report(name: str, **figures) -> None:
    """Print measured figures (shown with pytest -s, and collected in the soak summary)."""
    text = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"[fault] {name}: {text}")


def on_timeout(fn: Callable, seconds: float):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
    return t


# -- garbage ---------------------------------------------------------------------------------
NOT_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "", "abc", "1e400", "-1e999", "0x10", "--1", "1,5",
               "\x00\xff\xfe", " ", "None"]
HUGE = "9" * 1_000_000   # a megabyte of digits: float() makes it inf


def is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def keys_read(epoch: int) -> dict:
    """Every key a component reads, with the type it should have."""
    return {
        f"{NS}:meta": "hash", f"{NS}:signal:g1": "hash", f"{NS}:signals:g1": "stream",
        f"{NS}:strategies": "set", f"{NS}:strategies:backup": "set", f"{NS}:deregistered": "hash",
        f"{NS}:decisions:{epoch}": "zset", f"{NS}:decisions:{epoch + 1}": "zset",
        f"{NS}:decision:X": "hash", f"{NS}:strategy:X": "hash",
        f"{NS}:ready:{epoch}": "list", f"{NS}:ready:{epoch + 1}": "list",
        f"{NS}:trader": "hash", f"{NS}:traders": "hash", f"{NS}:medians": "stream",
        f"{NS}:lease:trader": "string", f"{NS}:lease:generator:g1": "string",
        f"{NS}:lease:strategy:X": "string", f"{NS}:trader:fence": "string",
    }


def write_as(client, key: str, kind: str, value: str = "garbage") -> None:
    """Replace ``key`` by a value of type ``kind`` (no expiry: what a careless hand writes)."""
    client.delete(key)
    {"string": lambda: client.set(key, value), "hash": lambda: client.hset(key, "junk", value),
     "list": lambda: client.rpush(key, value), "set": lambda: client.sadd(key, value),
     "zset": lambda: client.zadd(key, {value: 1.0}), "stream": lambda: client.xadd(key, {"junk": value}),
     }[kind]()


OTHER_TYPE = {"hash": "string", "string": "list", "list": "hash", "set": "zset", "zset": "set", "stream": "hash"}


def current_epoch(topo) -> int:
    return int(now_ms() // (topo.period * 1000))


def heal(topo) -> None:
    """What an operator does after garbage: remove garbage names from the registry (by the rules
    they are registrations, so only a deregistration removes them), and delete a deployment record
    that is not one (the components report it and wait: "fix it or delete NS:meta")."""
    c = topo.client()
    try:
        period = c.hget(f"{NS}:meta", "period_ms")
        if period is not None and period != str(int(topo.period * 1000)).encode():
            c.delete(f"{NS}:meta")
    except redis.exceptions.ResponseError:      # not a hash
        c.delete(f"{NS}:meta")
    try:
        junk = [m for m in c.smembers(f"{NS}:strategies") if m.decode(errors="replace") not in ALL]
    except redis.exceptions.ResponseError:
        junk = []
    if junk:
        c.srem(f"{NS}:strategies", *junk)


def assert_recovers(topo, what: str) -> float:
    back = now_ms()
    e = wait_until(lambda: next((x for x in topo.watcher.snapshot() if x.ts >= back and set(x.members) == ALL),
                                None), 12 * topo.period + 5, what=f"a full median after {what}")
    assert all(p.alive() for p in [*topo.procs.values(), *topo.traders]), topo.alive()
    return topo.periods(e.ts - back)


def status_survives(topo) -> None:
    for args in (("status",), ("status", "--json")):
        out = topo.cluster.cli(*args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]


def apply(c, op, epoch: int) -> None:
    def key(k: str) -> str:   # keys_read(0) names epoch 0 and 1: map them onto now and next
        for n, real in ((1, epoch + 1), (0, epoch)):
            k = k.replace(f":decisions:{n}", f":decisions:{real}").replace(f":ready:{n}", f":ready:{real}")
        return k
    try:
        if op[0] == "type":
            write_as(c, key(op[1]), op[2])
        elif op[0] == "field":
            c.hset(op[1], op[2], op[3])
        elif op[0] == "hdel":
            c.hdel(op[1], op[2])
        elif op[0] == "feed":
            c.xadd(f"{NS}:signals:{op[1]}", {"name": op[1], "epoch": str(epoch) if op[2] == "now" else op[2],
                                     "value": op[3], "status": "ok"})
        elif op[0] == "member":
            c.sadd(op[1], op[2])
        elif op[0] == "score":
            c.zadd(f"{NS}:decisions:{epoch if op[1] == 'now' else epoch + 1}", {op[2]: op[3]})
        elif op[0] == "string":
            c.set(op[1], op[2])
    except redis.exceptions.ResponseError:
        pass   # the key had another type already (an earlier op): that is garbage too


HASH_KEYS = [f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:strategy:X", f"{NS}:trader", f"{NS}:traders",
             f"{NS}:decision:X"]
FIELDS = ["period_ms", "instance", "registry", "value", "epoch", "status", "reason", "published", "fence", "state",
          "junk"]
LEASE_KEYS = [f"{NS}:lease:trader", f"{NS}:lease:generator:g1", f"{NS}:lease:strategy:X", f"{NS}:trader:fence"]


def random_garbage_text(rng) -> str:
    r = rng.random()
    if r < 0.1:
        return HUGE
    if r < 0.7:
        return rng.choice(NOT_NUMBERS)
    return "".join(rng.choice("abcxyz:|-_ \t\u00e9\u2603") for _ in range(rng.randint(1, 30)))


def random_garbage_op(rng) -> tuple:
    """One garbage write, like the hypothesis strategy of test_fault_garbage (for the soak)."""
    kind = rng.choice(["type", "field", "hdel", "feed", "member", "score", "string"])
    if kind == "type":
        return ("type", rng.choice(sorted(keys_read(0))), rng.choice(sorted(set(OTHER_TYPE.values()))))
    if kind == "field":
        return ("field", rng.choice(HASH_KEYS), rng.choice(FIELDS), random_garbage_text(rng))
    if kind == "hdel":
        return ("hdel", rng.choice(HASH_KEYS[:3]), rng.choice(FIELDS[:6]))
    if kind == "feed":
        return ("feed", rng.choice(["g1", "g2", "g3", "junk"]), rng.choice(["now", "junk"]), random_garbage_text(rng))
    if kind == "member":
        return ("member", rng.choice([f"{NS}:strategies", f"{NS}:strategies:backup"]), random_garbage_text(rng) or "x")
    if kind == "score":
        return ("score", rng.choice(["now", "next"]), rng.choice(["X", "Y", "junk"]), rng.choice([math.inf, -math.inf]))
    return ("string", rng.choice(LEASE_KEYS), random_garbage_text(rng))


# -- fixtures (import them into a test module to use them) ------------------------------------
import pytest  # noqa: E402

PERIOD = 0.5


@pytest.fixture
def topo(redis_server, tmp_path):
    """The fault topology against a private redis-server, period 0.5 s, one trader."""
    cluster = Cluster(redis_server.url, tmp_path, period=PERIOD, namespace=NS)
    t = Topology(cluster, PERIOD)
    yield t
    t.close()
    cluster.stop_all()
