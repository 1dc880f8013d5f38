"""Fault-injection harness: a known topology, a watcher that records every published median,
the invariant every fault run is checked against, and recovery-time measurement.

The topology uses the deterministic plug-ins of ``tests/plugins.py``, so the exact decision of
every strategy in every epoch, and so the exact median, is known in advance:

    generators  g1 = sig_a, g2 = sig_b, g3 = sig_c
    strategies  X on g1, Y on g2,g3, Z on g1,g3   (default decide: the mean of the signals)

The invariant, checked over everything a run published to ``NS:medians``:

* every entry's median is exactly the median of its members' same-epoch decisions: the decisions
  the plug-ins determine, and the decisions actually found in the strategies' own keys
  ``NS:decision:<S>`` (``<epoch>|<value>``), which the watcher reads while the epoch runs;
* its members are exactly the registered strategies (all of X, Y, Z once they registered, and the
  registry ``NS:strategies`` as the watcher saw it around the publication): no median is ever
  published while a registered strategy is missing;
* no epoch appears twice (across Redis restarts and failovers too: the watcher keeps history).
"""
from __future__ import annotations

import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import redis

from redismedian.common import parse_number
from redismedian.connection import RedisSettings, make_client
from redismedian.keys import DOORBELL_SLOTS, Keys
from redismedian.scripts import parse_report
from tests import plugins
from tests.support import Cluster, Proc, wait_until

NS = "t"


def harness_settings(url: str, socket_timeout: float) -> RedisSettings:
    """How the harness's own clients reach Redis: like the components' command line, with the
    Sentinel password of $REDISMEDIAN_SENTINEL_PASSWORD (the Sentinel test sets it for every process)."""
    return RedisSettings(url, socket_timeout, sentinel_password=os.environ.get("REDISMEDIAN_SENTINEL_PASSWORD"))


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

    def __init__(self, url: str, ns: str = NS, interval: float = 0.05, period: float | None = None):
        super().__init__(daemon=True)
        self.url, self.ns, self.interval = url, ns, interval
        self.keys = Keys.for_url(ns, url)   # {NS}:... on a Redis Cluster
        self.period_ms = int(round(period * 1000)) if period else None
        self.entries: list[Entry] = []
        # What the strategies' own keys held while each epoch ran: (strategy, epoch) -> value texts
        # of well-formed decisions (only read while that very epoch runs, by this machine's clock,
        # which is the Redis server's: a stale value written later is not taken for the epoch's).
        self.decisions: dict[tuple, set] = {}
        # The registry as seen at each poll: (local ms before the read, ms after, frozenset | None).
        self.registry: list[tuple] = []
        self._ids: set = set()
        self._halt = threading.Event()
        self._last = "-"
        self._inst = None
        self.last_error = ""
        self.polls = 0
        self.lock = threading.Lock()

    def client(self):
        return make_client(harness_settings(self.url, 1.0), namespace=self.ns)

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
        self.observe(client)
        inst = client.hget(self.keys.meta, "instance")
        if inst != self._inst:
            self._inst, self._last = inst, "-"
        start = "-" if self._last == "-" else "(" + self._last
        for entry_id, f in client.xrange(self.keys.medians, min=start, max="+"):
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

    def observe(self, client) -> None:
        """Read the strategies' decision keys and the registry (either may hold garbage)."""
        before = time.time() * 1000.0
        pipe = client.pipeline(transaction=False)
        pipe.mget([self.keys.decision(s) for s in sorted(ALL)])
        pipe.smembers(self.keys.strategies)
        raw, reg = pipe.execute(raise_on_error=False)
        after = time.time() * 1000.0
        with self.lock:
            self.registry.append((before, after, None if isinstance(reg, Exception)
                                  else frozenset(m.decode(errors="replace") for m in reg)))
            if isinstance(raw, Exception) or not self.period_ms:
                return
            for s, v in zip(sorted(ALL), raw):
                r = parse_report(v)
                if (r is None or r.epoch is None or r.state != "ok" or parse_number(r.value) is None
                        or not r.epoch == before // self.period_ms == after // self.period_ms):
                    continue
                self.decisions.setdefault((s, r.epoch), set()).add(r.value)

    def observed(self) -> tuple[dict, list]:
        with self.lock:
            return {k: set(v) for k, v in self.decisions.items()}, list(self.registry)

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


def registry_at(registry: list[tuple], ts: float, gap_ms: float = 250.0) -> frozenset | None:
    """The registry at server time ``ts``, when the watcher read the same set just before and just
    after it (at most ``gap_ms`` apart), else None (not known: it changed, or Redis was away)."""
    before = next((r for r in reversed(registry) if r[1] <= ts), None)
    after = next((r for r in registry if r[0] >= ts), None)
    if before is None or after is None or before[2] is None or before[2] != after[2]:
        return None
    if after[0] - before[1] > gap_ms:
        return None
    return before[2]


def registry_story(registry: list[tuple], entries: list[Entry]) -> str:
    """Why no publication has a known registry (for a failure message): the watcher's reads and
    their gaps around each entry."""
    reads = sum(r[2] is not None for r in registry)
    gaps = sorted(b[0] - a[1] for a, b in zip(registry, registry[1:]))
    around = []
    for e in entries[:8]:
        before = next((r for r in reversed(registry) if r[1] <= e.ts), None)
        after = next((r for r in registry if r[0] >= e.ts), None)
        around.append(f"epoch {e.epoch}: before={before and (round(before[1] - e.ts), before[2])} "
                      f"after={after and (round(after[0] - e.ts), after[2])}")
    median_gap = gaps[len(gaps) // 2] if gaps else None
    return (f"{len(registry)} reads ({reads} readable), gap median {median_gap and round(median_gap)} ms, "
            f"max {gaps and round(gaps[-1])} ms; " + "; ".join(around))


def check_invariant(entries: list[Entry], complete_from_ms: float | None = 0, observed: dict | None = None,
                    registry: list | None = None) -> list[str]:
    """Every problem with what was published (an empty list when all is right).

    ``complete_from_ms``: from this server time on every strategy of the topology is registered,
    so each entry must list all of them; before it (start-up) an entry may list fewer, but its
    median must still be exactly its members' median.

    ``observed`` ((strategy, epoch) -> decision texts found in ``NS:decision:<strategy>`` during
    that epoch) and ``registry`` (the watcher's reads of ``NS:strategies``), when given: every
    decision a member really wrote for the epoch is the one the plug-ins determine, the median is
    exactly the median of those written decisions, and the members are the registry of that moment.
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
        if observed is not None:
            written = {s: observed.get((s, e.epoch), set()) for s in members}
            for s, texts in sorted(written.items()):
                if any(float(t) != decision(s, e.epoch) for t in texts):
                    problems.append(f"epoch {e.epoch}: {NS}:decision:{s} held {sorted(texts)}, but {s} decides "
                                    f"{decision(s, e.epoch)!r}")
            if members and all(len(t) == 1 for t in written.values()):
                got = statistics.median(float(next(iter(t))) for t in written.values())
                if float(e.median) != got:
                    problems.append(f"epoch {e.epoch}: median {e.median}, but the decision keys of {e.members} "
                                    f"give {got!r}")
        if registry is not None:
            reg = registry_at(registry, e.ts)
            if reg is not None and reg != members:
                problems.append(f"epoch {e.epoch}: published over {e.members} while {NS}:strategies was "
                                f"{sorted(reg)}")
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
        """Start everything; with ``wait``, return once every strategy is registered (the trader
        admits them at its boundary ticks: with ``traders=0`` nobody is registered yet)."""
        for g, sig in GENERATORS.items():
            self.procs[g] = self.cluster.generator(g, f"tests.plugins:{sig}")
        for s, gens in STRATEGIES.items():
            self.procs[s] = self.cluster.strategy(s, ",".join(gens))
        self.watcher = MedianWatcher(self.url, period=self.period)
        self.watcher.start()
        for _ in range(traders):
            self.add_trader(*trader_args)
        if wait and traders:
            self.wait_registered()
        return self

    def add_trader(self, *args) -> Proc:
        p = self.cluster.trader(*args)
        self.traders.append(p)
        return p

    def client(self, **kw):
        return make_client(harness_settings(self.url, kw.pop("socket_timeout", 2.0)), namespace=NS, **kw)

    def wait_registered(self, timeout: float = 30) -> None:
        c = self.client()
        wait_until(lambda: {m.decode() for m in c.smembers(Keys.for_url(NS, self.url).strategies)} == set(ALL), timeout,
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
        proc.wait_for_output(r"(generator \S+ started|started \S+ \(signals|trader started)", timeout)
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
        return {k.decode(): v.decode(errors="replace") for k, v in self.client().hgetall(Keys.for_url(NS, self.url).trader).items()}

    def wait_trader_error(self, *names: str, timeout_periods: float = 12) -> str:
        """Wait until the trader reports ``error`` naming every strategy in ``names``; its reason."""
        def check():
            h = self.trader_hash()
            r = h.get("reason", "")
            return r if h.get("state") == "error" and all(f"{n}:" in r for n in names) else None
        return wait_until(check, timeout_periods * self.period, interval=0.05,
                          what=f"trader error naming {', '.join(names)}")

    def check(self) -> list[str]:
        observed, registry = self.watcher.observed()
        return check_invariant(self.watcher.snapshot(), self.complete_ms, observed, registry)

    def close(self) -> None:
        if self.watcher:
            self.watcher.stop()

    def alive(self) -> dict:
        return {n: p.alive() for n, p in self.procs.items()}


def assert_invariant(topo: Topology, min_entries: int = 1) -> list[Entry]:
    # The checks against what Redis held really ran: the watcher read the decision keys of every
    # member, and the registry around the publication, for some of the entries at least.  On a
    # loaded machine the watcher's reads around the few medians published so far can all be too far
    # apart to bracket one (a poll took > 250 ms): then wait, with a deadline, for one that is.
    def checked() -> bool:
        entries = topo.watcher.snapshot()
        observed, registry = topo.watcher.observed()
        return any(all((s, e.epoch) in observed for s in e.members) for e in entries) and \
            any(registry_at(registry, e.ts) is not None for e in entries)
    try:
        if topo.watcher.snapshot() and not checked():
            wait_until(checked, 10 * topo.period, interval=0.05, what="a median read around by the watcher")
    except AssertionError:
        pass                      # said precisely below
    entries = topo.watcher.snapshot()
    observed, registry = topo.watcher.observed()
    problems = check_invariant(entries, topo.complete_ms, observed, registry)
    assert not problems, "invariant broken:\n" + "\n".join(problems[:20])
    assert len(entries) >= min_entries, (f"only {len(entries)} medians seen (watcher: {topo.watcher.polls} polls, "
                                         f"last error {topo.watcher.last_error or 'none'})")
    if entries:
        read = [e for e in entries if all((s, e.epoch) in observed for s in e.members)]
        assert read, f"no median's decisions were read from the strategies' keys ({len(observed)} reads)"
        assert any(registry_at(registry, e.ts) is not None for e in entries), (
            f"the registry was never read around a publication: {registry_story(registry, entries)}")
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
               "\x00\xff\xfe", " ", "None", "1_000", " 5 ", "1.5\n", "1|2", "!ok"]
HUGE = "9" * 1_000_000   # a megabyte of digits: float() makes it inf


def is_number(text: str) -> bool:
    """Anything float() reads as finite, a superset of the components' strict grammar: random
    garbage is drawn outside it, so that no garbage write is a well-formed decision (a forgery,
    which the design does not claim to detect: docs/guarantees.md, "Not promised").  NOT_NUMBERS
    also holds texts that float() reads ("1_000", " 5 ", "1.5\\n") but the strict grammar refuses."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def keys_read(epoch: int) -> dict:
    """Every key a component reads, with the type it should have.  Epoch ``epoch`` stands for the
    current epoch and ``epoch + 1`` for the next (see ``apply``)."""
    return {
        f"{NS}:meta": "hash", f"{NS}:signal:g1": "hash", f"{NS}:signals:g1": "stream",
        f"{NS}:strategies": "set", f"{NS}:strategies:backup": "set", f"{NS}:deregistered": "hash",
        f"{NS}:decision:X": "string", f"{NS}:decision:Y": "string",
        f"{NS}:count:{epoch % DOORBELL_SLOTS}": "string", f"{NS}:count:{(epoch + 1) % DOORBELL_SLOTS}": "string",
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


WHEN = {"now": 0, "next": 1, "past": -1}


def apply(c, op, epoch: int) -> None:
    """One garbage write (an op of ``random_garbage_op`` or test_fault_garbage's hypothesis ops)."""
    def key(k: str) -> str:   # keys_read(0) names epoch 0 and 1: map them onto now and next
        return {f"{NS}:count:{n}": f"{NS}:count:{(epoch + n) % DOORBELL_SLOTS}" for n in (0, 1)}.get(k, k)
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
            if op[1] == f"{NS}:joins":      # a channel: a request to join
                c.publish(op[1], op[2])
            else:
                c.sadd(op[1], op[2])
        elif op[0] == "decision":
            # ("decision", now|next|past, strategy, text): a report of that epoch holding garbage
            # instead of a number (for 'past', any number: a stale decision must never count).
            c.set(f"{NS}:decision:{op[2]}", f"{epoch + WHEN[op[1]]}|{op[3]}")
        elif op[0] == "report":
            # ("report", now|next, strategy, text): "no decision" with a garbage state and reason
            c.set(f"{NS}:decision:{op[2]}", f"{epoch + WHEN[op[1]]}|!{op[3]}")
        elif op[0] == "count":
            # ("count", now|next, text): the doorbell counter of that epoch (garbage, or a number
            # that makes the trader look early or late)
            c.set(f"{NS}:count:{(epoch + WHEN[op[1]]) % DOORBELL_SLOTS}", op[2])
        elif op[0] == "ready":
            # ("ready", now|next, text): a ring on the doorbell channel (an epoch's number, or junk)
            c.publish(f"{NS}:ready", op[2] if op[2] != "epoch" else str(epoch + WHEN[op[1]]))
        elif op[0] == "string":
            c.set(op[1], op[2])
    except redis.exceptions.ResponseError:
        pass   # the key had another type already (an earlier op): that is garbage too


HASH_KEYS = [f"{NS}:meta", f"{NS}:signal:g1", f"{NS}:trader", f"{NS}:traders"]
FIELDS = ["period_ms", "instance", "registry", "created", "recreated", "value", "epoch", "status", "reason",
          "published", "fence", "state", "junk"]
LEASE_KEYS = [f"{NS}:lease:trader", f"{NS}:lease:generator:g1", f"{NS}:lease:strategy:X", f"{NS}:trader:fence"]
SET_KEYS = [f"{NS}:strategies", f"{NS}:strategies:backup", f"{NS}:joins"]
COUNTS = ["0", "1", "2", "3", "-5", "999", "garbage", "1.5"]


def random_garbage_text(rng) -> str:
    r = rng.random()
    if r < 0.1:
        return HUGE
    if r < 0.7:
        return rng.choice(NOT_NUMBERS)
    return "".join(rng.choice("abcxyz:|-_ \t\u00e9\u2603") for _ in range(rng.randint(1, 30)))


def random_garbage_op(rng) -> tuple:
    """One garbage write, like the hypothesis strategy of test_fault_garbage (for the soak)."""
    kind = rng.choice(["type", "field", "hdel", "feed", "member", "decision", "report", "count", "ready", "string"])
    if kind == "type":
        # another type than the key's own: a registry replaced by a set of other names is not garbage
        # but a hand edit (every registered name deregistered), which the rules obey
        key = rng.choice(sorted(keys_read(0)))
        return ("type", key, rng.choice(sorted(set(OTHER_TYPE.values()) - {keys_read(0)[key]})))
    if kind == "field":
        return ("field", rng.choice(HASH_KEYS), rng.choice(FIELDS), random_garbage_text(rng))
    if kind == "hdel":
        return ("hdel", rng.choice(HASH_KEYS[:3]), rng.choice(FIELDS[:8]))
    if kind == "feed":
        return ("feed", rng.choice(["g1", "g2", "g3", "junk"]), rng.choice(["now", "junk"]), random_garbage_text(rng))
    if kind == "member":
        return ("member", rng.choice(SET_KEYS), random_garbage_text(rng) or "x")
    if kind == "decision":
        when = rng.choice(["now", "next", "past"])
        text = rng.choice(["0.5", "-1e300", "0"]) if when == "past" else random_garbage_text(rng)
        return ("decision", when, rng.choice(["X", "Y", "junk"]), text)
    if kind == "report":
        return ("report", rng.choice(["now", "next"]), rng.choice(["X", "Y"]), random_garbage_text(rng))
    if kind == "count":
        return ("count", rng.choice(["now", "next"]), rng.choice(COUNTS))
    if kind == "ready":
        return ("ready", rng.choice(["now", "next"]), rng.choice(["epoch", random_garbage_text(rng)[:100] or "x"]))
    return ("string", rng.choice(LEASE_KEYS), random_garbage_text(rng))


# The fault tests' period (the ``topo`` fixture of tests/fault/conftest.py runs at it).
PERIOD = 0.5
